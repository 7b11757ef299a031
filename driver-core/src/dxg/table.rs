//! The `/dev/dxg` ioctl table (reference §1.2 / §1.3 / §1.4): one entry per request code
//! of the final driver (0x01–0x49) plus the eight legacy numbers as `Unsupported`.

use super::types::*;
use super::vmbus::{adapter as a, global as g};
use crate::ioc::iowr;
use crate::layout::{Kind, StructDesc};
use crate::schema::{
    ArgKind, Cond, Device, Dir, Effect, HandleEffect, HandleType, IoctlClass, IoctlDesc, Loc,
    PointerDesc, PtrAddr, PtrLen, VmbusEffect,
};

/// `_IOC_TYPE` of every dxg request ('G').
pub const DXG_IOC_TYPE: u32 = 0x47;
/// Driver limit on any buffer (`DXG_MAX_VM_BUS_PACKET_SIZE`).
pub const MAX_BYTES: u32 = 131072;

const fn e(
    name: &'static str,
    nr: u32,
    layout: &'static StructDesc,
    handler: &'static str,
) -> IoctlDesc {
    IoctlDesc {
        device: Device::Dxg,
        name,
        nr,
        code: iowr(DXG_IOC_TYPE, nr, layout.size),
        layout,
        arg: ArgKind::Struct,
        class: IoctlClass::Flat,
        pointers: &[],
        handles: &[],
        vmbus: &[],
        handler,
        note: "",
    }
}

const fn p(
    path: &'static str,
    offset: u32,
    len: PtrLen,
    elem_size: u32,
    elem: Kind,
    dir: Dir,
) -> PointerDesc {
    PointerDesc {
        path,
        addr: PtrAddr::Field { offset },
        len,
        elem_size,
        elem,
        dir,
        max_bytes: MAX_BYTES,
        cond: Cond::Always,
        nested: &[],
        note: "",
    }
}

const fn cnt(offset: u32) -> PtrLen {
    PtrLen::Count { offset, size: 4 }
}
const fn bytes(offset: u32) -> PtrLen {
    PtrLen::Bytes { offset, size: 4 }
}
const fn f(path: &'static str, offset: u32, size: u8) -> Loc {
    Loc::Field { path, offset, size }
}
const fn he(effect: Effect, loc: Loc, handle_type: HandleType, when: &'static str) -> HandleEffect {
    HandleEffect {
        effect,
        loc,
        handle_type,
        when,
    }
}
const fn v(cmd: crate::schema::VmbusCmd, when: &'static str) -> VmbusEffect {
    VmbusEffect { cmd, when }
}

const HANDLE: Kind = Kind::Handle;
const U64: Kind = Kind::U;
const BYTES: Kind = Kind::Bytes;
const PC: IoctlClass = IoctlClass::PointerFollowing;
use Effect::*;
use HandleType as T;

const fn legacy(name: &'static str, nr: u32, layout: &'static StructDesc) -> IoctlDesc {
    IoctlDesc {
        class: IoctlClass::Unsupported,
        note: "defined in older headers (0a2a0a08); no handler in the final driver: -ENOTTY",
        ..e(name, nr, layout, "")
    }
}

macro_rules! legacy_struct {
    ($id:ident, $name:literal, $size:literal) => {
        const $id: StructDesc = StructDesc {
            name: $name,
            size: $size,
            fields: &[],
            packed: false,
        };
    };
}
legacy_struct!(L_CREATECONTEXT, "d3dkmt_createcontext", 96);
legacy_struct!(L_CREATEHWCONTEXT, "d3dkmt_createhwcontext", 40);
legacy_struct!(L_DESTROYHWCONTEXT, "d3dkmt_destroyhwcontext", 4);
legacy_struct!(
    L_GETSHAREDRESOURCEADAPTERLUID,
    "d3dkmt_getsharedresourceadapterluid",
    24
);
legacy_struct!(L_OPENRESOURCE, "d3dkmt_openresource", 72);
legacy_struct!(L_OPENSYNCOBJECT, "d3dkmt_opensynchronizationobject", 72);
legacy_struct!(L_QUERYRESOURCEINFO, "d3dkmt_queryresourceinfo", 32);
legacy_struct!(L_RENDER, "d3dkmt_render", 368);

const ESCAPE_KNOWN_BUILDTEST: Cond = Cond::All(&[
    Cond::Root(&Cond::Eq {
        offset: 8,
        size: 4,
        value: 0,
    }),
    Cond::Root(&Cond::BitSet { offset: 12, bit: 6 }),
    Cond::Eq {
        offset: 0,
        size: 4,
        value: 3,
    },
]);

/// The dxg table, sorted by nr.
pub const IOCTLS: &[IoctlDesc] = &[
    IoctlDesc {
        handles: &[he(Creates, f("adapter_handle", 8, 4), T::Adapter, "")],
        ..e(
            "LX_DXOPENADAPTERFROMLUID",
            0x01,
            &OpenAdapterFromLuid::DESC,
            "dxgkio_open_adapter_from_luid",
        )
    },
    IoctlDesc {
        handles: &[he(
            Creates,
            f("device", 12, 4),
            T::Device,
            "host returned a non-zero handle",
        )],
        vmbus: &[v(a(0), ""), v(a(1), "on rollback")],
        note: "command_buffer, allocation_list, patch_location_list are ignored by the driver",
        ..e(
            "LX_DXCREATEDEVICE",
            0x02,
            &CreateDevice::DESC,
            "dxgkio_create_device",
        )
    },
    legacy("LX_DXCREATECONTEXT", 0x03, &L_CREATECONTEXT),
    IoctlDesc {
        class: PC,
        pointers: &[p("priv_drv_data", 16, bytes(24), 1, BYTES, Dir::InOut)],
        handles: &[he(Creates, f("context", 32, 4), T::Context, "")],
        vmbus: &[v(a(6), ""), v(a(7), "on rollback")],
        ..e(
            "LX_DXCREATECONTEXTVIRTUAL",
            0x04,
            &CreateContextVirtual::DESC,
            "dxgkio_create_context_virtual",
        )
    },
    IoctlDesc {
        handles: &[he(Destroys, f("context", 0, 4), T::Context, "")],
        vmbus: &[v(a(7), "")],
        ..e(
            "LX_DXDESTROYCONTEXT",
            0x05,
            &DestroyContext::DESC,
            "dxgkio_destroy_context",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[
            PointerDesc {
                nested: &[
                    PointerDesc {
                        note: "host's per-allocation private data is copied back over it",
                        ..p(
                            "allocation_info[].priv_drv_data",
                            16,
                            bytes(24),
                            1,
                            BYTES,
                            Dir::InOut,
                        )
                    },
                    PointerDesc {
                        note: "existing sysmem: pages pinned and shared with the host (GPADL or PFN list), length = host-reported allocation size, page aligned; not copied",
                        ..p(
                            "allocation_info[].sysmem",
                            8,
                            PtrLen::HostReported,
                            1,
                            BYTES,
                            Dir::Pinned,
                        )
                    },
                ],
                max_bytes: 1024 * 96,
                note: "alloc_count 1..1024; .allocation of each element written back",
                ..p(
                    "allocation_info",
                    48,
                    cnt(44),
                    96,
                    Kind::Struct(&AllocationInfo2::DESC),
                    Dir::InOut,
                )
            },
            p("private_runtime_data", 16, bytes(24), 1, BYTES, Dir::In),
            PointerDesc {
                cond: Cond::BitSet {
                    offset: 56,
                    bit: 16,
                },
                note: "union with priv_drv_data when flags.standard_allocation",
                ..p(
                    "standard_allocation",
                    32,
                    PtrLen::Fixed { count: 1 },
                    24,
                    Kind::Struct(&CreateStandardAllocation::DESC),
                    Dir::In,
                )
            },
            PointerDesc {
                cond: Cond::BitClear {
                    offset: 56,
                    bit: 16,
                },
                ..p("priv_drv_data", 32, bytes(40), 1, BYTES, Dir::In)
            },
        ],
        handles: &[
            he(
                Creates,
                f("resource", 4, 4),
                T::Resource,
                "flags.create_resource",
            ),
            he(
                Creates,
                Loc::Elem {
                    pointer: "allocation_info",
                    offset: 0,
                    size: 4,
                },
                T::Allocation,
                "",
            ),
        ],
        vmbus: &[
            v(a(39), "x2 if flags.standard_allocation"),
            v(a(4), ""),
            v(a(45), "per sysmem allocation (GPADL)"),
            v(a(66), "per sysmem allocation when map_guest_pages_enabled"),
            v(a(5), "on rollback"),
        ],
        note: "may return raw NTSTATUS 0xC000000D (not -errno) for standard-allocation errors",
        ..e(
            "LX_DXCREATEALLOCATION",
            0x06,
            &CreateAllocation::DESC,
            "dxgkio_create_allocation",
        )
    },
    IoctlDesc {
        handles: &[
            he(Creates, f("paging_queue", 8, 4), T::PagingQueue, ""),
            he(Creates, f("sync_object", 12, 4), T::MonitoredFence, ""),
            he(
                MapsVa,
                f("fence_cpu_virtual_address", 16, 8),
                T::Mapping,
                "1 page",
            ),
        ],
        vmbus: &[v(a(9), "")],
        ..e(
            "LX_DXCREATEPAGINGQUEUE",
            0x07,
            &CreatePagingQueue::DESC,
            "dxgkio_create_paging_queue",
        )
    },
    IoctlDesc {
        handles: &[
            he(HostValue, f("virtual_address", 56, 8), T::Any, ""),
            he(HostValue, f("paging_fence_value", 64, 8), T::Any, ""),
        ],
        vmbus: &[v(a(18), "")],
        note: "adapter may hold an adapter or a paging-queue handle",
        ..e(
            "LX_DXRESERVEGPUVIRTUALADDRESS",
            0x08,
            &ReserveGpuVa::DESC,
            "dxgkio_reserve_gpu_va",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[p("private_data", 8, bytes(16), 1, BYTES, Dir::InOut)],
        vmbus: &[v(a(2), "")],
        ..e(
            "LX_DXQUERYADAPTERINFO",
            0x09,
            &QueryAdapterInfo::DESC,
            "dxgkio_query_adapter_info",
        )
    },
    IoctlDesc {
        vmbus: &[v(a(21), "")],
        ..e(
            "LX_DXQUERYVIDEOMEMORYINFO",
            0x0a,
            &QueryVideoMemoryInfo::DESC,
            "dxgkio_query_vidmem_info",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[PointerDesc {
            max_bytes: 10240 * 4,
            ..p("allocation_list", 8, cnt(4), 4, HANDLE, Dir::In)
        }],
        handles: &[
            he(HostValue, f("paging_fence_value", 32, 8), T::Any, ""),
            he(HostValue, f("num_bytes_to_trim", 40, 8), T::Any, ""),
        ],
        vmbus: &[v(a(11), "")],
        note: "priority_list is not read by the driver; may return STATUS_PENDING (0x103)",
        ..e(
            "LX_DXMAKERESIDENT",
            0x0b,
            &MakeResident::DESC,
            "dxgkio_make_resident",
        )
    },
    IoctlDesc {
        handles: &[
            he(HostValue, f("virtual_address", 88, 8), T::Any, ""),
            he(HostValue, f("paging_fence_value", 96, 8), T::Any, ""),
        ],
        vmbus: &[v(a(17), "")],
        note: "may return STATUS_PENDING (0x103)",
        ..e(
            "LX_DXMAPGPUVIRTUALADDRESS",
            0x0c,
            &MapGpuVa::DESC,
            "dxgkio_map_gpu_va",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[PointerDesc {
            nested: &[
                PointerDesc {
                    cond: ESCAPE_KNOWN_BUILDTEST,
                    max_bytes: 4096,
                    ..p(
                        "priv_drv_data.dma_buffer",
                        88,
                        bytes(104),
                        1,
                        BYTES,
                        Dir::Out,
                    )
                },
                PointerDesc {
                    cond: ESCAPE_KNOWN_BUILDTEST,
                    max_bytes: 1024,
                    ..p(
                        "priv_drv_data.dma_buffer_priv_data",
                        96,
                        bytes(108),
                        1,
                        BYTES,
                        Dir::Out,
                    )
                },
            ],
            note: "type DRIVERPRIVATE + flags.driver_known_escape: first u32 is d3dddi_knownescapetype; 3 = d3dddi_buildtestcommandbuffer (112 bytes)",
            ..p("priv_drv_data", 16, bytes(24), 1, BYTES, Dir::InOut)
        }],
        vmbus: &[v(
            a(13),
            "not for known escapes TRANSLATEALLOCATIONHANDLE/TRANSLATERESOURCEHANDLE",
        )],
        ..e("LX_DXESCAPE", 0x0d, &Escape::DESC, "dxgkio_escape")
    },
    IoctlDesc {
        vmbus: &[v(
            a(28),
            "skipped for EXECUTION when the cached state is current",
        )],
        ..e(
            "LX_DXGETDEVICESTATE",
            0x0e,
            &GetDeviceState::DESC,
            "dxgkio_get_device_state",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[
            PointerDesc {
                max_bytes: 1024 * 4,
                ..p("history_buffer_array", 376, cnt(368), 4, HANDLE, Dir::In)
            },
            p("priv_drv_data", 288, bytes(296), 1, BYTES, Dir::In),
        ],
        vmbus: &[v(a(20), "async when async_msg_enabled")],
        note: "command_buffer is a GPU VA (not dereferenced); broadcast_context and written_primaries are inline",
        ..e(
            "LX_DXSUBMITCOMMAND",
            0x0f,
            &SubmitCommand::DESC,
            "dxgkio_submit_command",
        )
    },
    IoctlDesc {
        handles: &[
            he(Creates, f("sync_object", 88, 4), T::SyncObject, ""),
            he(
                Creates,
                f("info.shared_handle", 80, 4),
                T::SharedHandle,
                "flags.shared",
            ),
            he(
                TakesFd,
                f("info.cpu_notification.event", 16, 8),
                T::EventFd,
                "type CPU_NOTIFICATION (4)",
            ),
            he(
                MapsVa,
                f("info.monitored_fence.fence_cpu_virtual_address", 24, 8),
                T::Mapping,
                "type MONITORED_FENCE (5)",
            ),
            he(
                HostValue,
                f("info.monitored_fence.fence_gpu_virtual_address", 32, 8),
                T::Any,
                "type MONITORED_FENCE (5)",
            ),
            he(
                MapsVa,
                f(
                    "info.periodic_monitored_fence.fence_cpu_virtual_address",
                    32,
                    8,
                ),
                T::Mapping,
                "type PERIODIC_MONITORED_FENCE (6)",
            ),
            he(
                HostValue,
                f(
                    "info.periodic_monitored_fence.fence_gpu_virtual_address",
                    40,
                    8,
                ),
                T::Any,
                "type PERIODIC_MONITORED_FENCE (6)",
            ),
        ],
        vmbus: &[v(a(8), ""), v(g(1003), "on rollback")],
        ..e(
            "LX_DXCREATESYNCHRONIZATIONOBJECT",
            0x10,
            &CreateSyncObject2::DESC,
            "dxgkio_create_sync_object",
        )
    },
    IoctlDesc {
        handles: &[he(
            TakesFd,
            f("cpu_event_handle", 400, 8),
            T::EventFd,
            "flags.enqueue_cpu_event",
        )],
        vmbus: &[v(a(26), "async when async_msg_enabled")],
        note: "object_array/contexts are inline; the driver reads them again from user memory (double fetch)",
        ..e(
            "LX_DXSIGNALSYNCHRONIZATIONOBJECT",
            0x11,
            &SignalSyncObject2::DESC,
            "dxgkio_signal_sync_object",
        )
    },
    IoctlDesc {
        vmbus: &[v(a(25), "async when async_msg_enabled")],
        ..e(
            "LX_DXWAITFORSYNCHRONIZATIONOBJECT",
            0x12,
            &WaitSyncObject2::DESC,
            "dxgkio_wait_sync_object",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[PointerDesc {
            max_bytes: 1024 * 4,
            ..p("allocations", 8, cnt(16), 4, HANDLE, Dir::In)
        }],
        handles: &[
            he(
                Destroys,
                Loc::Elem {
                    pointer: "allocations",
                    offset: 0,
                    size: 4,
                },
                T::Allocation,
                "",
            ),
            he(
                Destroys,
                f("resource", 4, 4),
                T::Resource,
                "resource != 0 (with its allocations)",
            ),
        ],
        vmbus: &[v(a(5), "")],
        note: "exactly one of alloc_count / resource must be non-zero",
        ..e(
            "LX_DXDESTROYALLOCATION2",
            0x13,
            &DestroyAllocation2::DESC,
            "dxgkio_destroy_allocation",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[PointerDesc {
            max_bytes: 64 * 20,
            note: "NULL → only num_adapters written; too small → -EOVERFLOW, nothing written",
            ..p(
                "adapters",
                8,
                cnt(0),
                20,
                Kind::Struct(&AdapterInfo::DESC),
                Dir::Out,
            )
        }],
        handles: &[he(
            Creates,
            Loc::Elem {
                pointer: "adapters",
                offset: 0,
                size: 4,
            },
            T::Adapter,
            "one per returned adapter",
        )],
        ..e(
            "LX_DXENUMADAPTERS2",
            0x14,
            &EnumAdapters2::DESC,
            "dxgkio_enum_adapters",
        )
    },
    IoctlDesc {
        handles: &[he(Destroys, f("adapter_handle", 0, 4), T::Adapter, "")],
        vmbus: &[v(
            a(42),
            "last per-process reference: FLUSHDEVICE + teardown of leftover devices",
        )],
        ..e(
            "LX_DXCLOSEADAPTER",
            0x15,
            &CloseAdapter::DESC,
            "dxgkio_close_adapter",
        )
    },
    IoctlDesc {
        vmbus: &[v(a(49), "")],
        ..e(
            "LX_DXCHANGEVIDEOMEMORYRESERVATION",
            0x16,
            &ChangeVidMemReservation::DESC,
            "dxgkio_change_vidmem_reservation",
        )
    },
    legacy("LX_DXCREATEHWCONTEXT", 0x17, &L_CREATEHWCONTEXT),
    IoctlDesc {
        class: PC,
        pointers: &[p("priv_drv_data", 16, bytes(8), 1, BYTES, Dir::InOut)],
        handles: &[
            he(Creates, f("queue", 24, 4), T::HwQueue, ""),
            he(
                Creates,
                f("queue_progress_fence", 28, 4),
                T::MonitoredFence,
                "",
            ),
            he(
                MapsVa,
                f("queue_progress_fence_cpu_va", 32, 8),
                T::Mapping,
                "1 page",
            ),
            he(
                HostValue,
                f("queue_progress_fence_gpu_va", 40, 8),
                T::Any,
                "",
            ),
        ],
        vmbus: &[v(a(50), ""), v(a(51), "on rollback")],
        ..e(
            "LX_DXCREATEHWQUEUE",
            0x18,
            &CreateHwQueue::DESC,
            "dxgkio_create_hwqueue",
        )
    },
    IoctlDesc {
        handles: &[he(
            Destroys,
            f("device", 0, 4),
            T::Device,
            "and every child object",
        )],
        vmbus: &[v(a(5), "child teardown"), v(a(1), "")],
        ..e(
            "LX_DXDESTROYDEVICE",
            0x19,
            &DestroyDevice::DESC,
            "dxgkio_destroy_device",
        )
    },
    legacy("LX_DXDESTROYHWCONTEXT", 0x1a, &L_DESTROYHWCONTEXT),
    IoctlDesc {
        handles: &[he(Destroys, f("queue", 0, 4), T::HwQueue, "")],
        vmbus: &[v(a(51), "")],
        ..e(
            "LX_DXDESTROYHWQUEUE",
            0x1b,
            &DestroyHwQueue::DESC,
            "dxgkio_destroy_hwqueue",
        )
    },
    IoctlDesc {
        handles: &[he(
            Destroys,
            f("paging_queue", 0, 4),
            T::PagingQueue,
            "and its monitored-fence handle",
        )],
        vmbus: &[v(a(10), "")],
        ..e(
            "LX_DXDESTROYPAGINGQUEUE",
            0x1c,
            &DestroyPagingQueue::DESC,
            "dxgkio_destroy_paging_queue",
        )
    },
    IoctlDesc {
        handles: &[he(Destroys, f("sync_object", 0, 4), T::SyncObject, "")],
        vmbus: &[v(g(1003), "global channel")],
        ..e(
            "LX_DXDESTROYSYNCHRONIZATIONOBJECT",
            0x1d,
            &DestroySyncObject::DESC,
            "dxgkio_destroy_sync_object",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[PointerDesc {
            max_bytes: 10240 * 4,
            ..p("allocations", 8, cnt(4), 4, HANDLE, Dir::In)
        }],
        handles: &[he(HostValue, f("num_bytes_to_trim", 24, 8), T::Any, "")],
        vmbus: &[v(a(12), "")],
        ..e("LX_DXEVICT", 0x1e, &Evict::DESC, "dxgkio_evict")
    },
    IoctlDesc {
        handles: &[he(
            HostValue,
            f("adapter", 0, 4),
            T::Adapter,
            "copied back with the host adapter handle",
        )],
        vmbus: &[v(a(37), "")],
        ..e(
            "LX_DXFLUSHHEAPTRANSITIONS",
            0x1f,
            &FlushHeapTransitions::DESC,
            "dxgkio_flush_heap_transitions",
        )
    },
    IoctlDesc {
        vmbus: &[v(a(16), "")],
        ..e(
            "LX_DXFREEGPUVIRTUALADDRESS",
            0x20,
            &FreeGpuVa::DESC,
            "dxgkio_free_gpu_va",
        )
    },
    IoctlDesc {
        vmbus: &[v(a(61), "in_process=1")],
        ..e(
            "LX_DXGETCONTEXTINPROCESSSCHEDULINGPRIORITY",
            0x21,
            &GetContextInProcessSchedulingPriority::DESC,
            "dxgkio_get_context_process_scheduling_priority",
        )
    },
    IoctlDesc {
        vmbus: &[v(a(61), "in_process=0")],
        ..e(
            "LX_DXGETCONTEXTSCHEDULINGPRIORITY",
            0x22,
            &GetContextSchedulingPriority::DESC,
            "dxgkio_get_context_scheduling_priority",
        )
    },
    legacy(
        "LX_DXGETSHAREDRESOURCEADAPTERLUID",
        0x23,
        &L_GETSHAREDRESOURCEADAPTERLUID,
    ),
    IoctlDesc {
        vmbus: &[v(a(67), "")],
        ..e(
            "LX_DXINVALIDATECACHE",
            0x24,
            &InvalidateCache::DESC,
            "dxgkio_invalidate_cache",
        )
    },
    IoctlDesc {
        handles: &[he(
            MapsVa,
            f("data", 16, 8),
            T::Mapping,
            "new IO-space mapping unless the allocation already has a CPU address",
        )],
        vmbus: &[v(a(23), "unless the allocation already has a CPU address")],
        ..e("LX_DXLOCK2", 0x25, &Lock2::DESC, "dxgkio_lock2")
    },
    IoctlDesc {
        vmbus: &[v(a(29), "")],
        ..e(
            "LX_DXMARKDEVICEASERROR",
            0x26,
            &MarkDeviceAsError::DESC,
            "dxgkio_mark_device_as_error",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[
            PointerDesc {
                max_bytes: 10240 * 4,
                note: "xor allocations",
                ..p("resources", 8, cnt(24), 4, HANDLE, Dir::In)
            },
            PointerDesc {
                max_bytes: 10240 * 4,
                note: "xor resources",
                ..p("allocations", 16, cnt(24), 4, HANDLE, Dir::In)
            },
        ],
        vmbus: &[v(a(57), "")],
        ..e(
            "LX_DXOFFERALLOCATIONS",
            0x27,
            &OfferAllocations::DESC,
            "dxgkio_offer_allocations",
        )
    },
    legacy("LX_DXOPENRESOURCE", 0x28, &L_OPENRESOURCE),
    legacy("LX_DXOPENSYNCHRONIZATIONOBJECT", 0x29, &L_OPENSYNCOBJECT),
    IoctlDesc {
        class: PC,
        pointers: &[
            p("allocations", 8, cnt(16), 4, HANDLE, Dir::In),
            p(
                "residency_status",
                24,
                PtrLen::CountOr1IfNonZero {
                    offset: 16,
                    nonzero_offset: 4,
                },
                4,
                Kind::Enum(&RESIDENCY_STATUS),
                Dir::Out,
            ),
        ],
        vmbus: &[v(a(41), "")],
        ..e(
            "LX_DXQUERYALLOCATIONRESIDENCY",
            0x2a,
            &QueryAllocationResidency::DESC,
            "dxgkio_query_alloc_residency",
        )
    },
    legacy("LX_DXQUERYRESOURCEINFO", 0x2b, &L_QUERYRESOURCEINFO),
    IoctlDesc {
        class: PC,
        pointers: &[
            PointerDesc {
                max_bytes: 10240 * 4,
                note: "xor allocations",
                ..p("resources", 8, cnt(4), 4, HANDLE, Dir::In)
            },
            PointerDesc {
                max_bytes: 10240 * 4,
                note: "xor resources",
                ..p("allocations", 16, cnt(4), 4, HANDLE, Dir::In)
            },
            PointerDesc {
                max_bytes: 10240 * 4,
                note: "union discarded/results; written if non-NULL",
                ..p(
                    "results",
                    24,
                    cnt(4),
                    4,
                    Kind::Enum(&RECLAIM_RESULT),
                    Dir::Out,
                )
            },
        ],
        handles: &[he(HostValue, f("paging_fence_value", 32, 8), T::Any, "")],
        vmbus: &[v(a(58), "")],
        ..e(
            "LX_DXRECLAIMALLOCATIONS2",
            0x2c,
            &ReclaimAllocations2::DESC,
            "dxgkio_reclaim_allocations",
        )
    },
    legacy("LX_DXRENDER", 0x2d, &L_RENDER),
    IoctlDesc {
        class: PC,
        pointers: &[
            p("allocation_list", 8, cnt(16), 4, HANDLE, Dir::In),
            p(
                "priorities",
                24,
                PtrLen::CountOr1IfNonZero {
                    offset: 16,
                    nonzero_offset: 4,
                },
                4,
                Kind::U,
                Dir::In,
            ),
        ],
        vmbus: &[v(a(59), "")],
        ..e(
            "LX_DXSETALLOCATIONPRIORITY",
            0x2e,
            &SetAllocationPriority::DESC,
            "dxgkio_set_allocation_priority",
        )
    },
    IoctlDesc {
        vmbus: &[v(a(33), "in_process=1")],
        ..e(
            "LX_DXSETCONTEXTINPROCESSSCHEDULINGPRIORITY",
            0x2f,
            &SetContextInProcessSchedulingPriority::DESC,
            "dxgkio_set_context_process_scheduling_priority",
        )
    },
    IoctlDesc {
        vmbus: &[v(a(33), "in_process=0")],
        ..e(
            "LX_DXSETCONTEXTSCHEDULINGPRIORITY",
            0x30,
            &SetContextSchedulingPriority::DESC,
            "dxgkio_set_context_scheduling_priority",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[
            PointerDesc {
                max_bytes: 32 * 4,
                ..p("objects", 8, cnt(4), 4, HANDLE, Dir::In)
            },
            PointerDesc {
                max_bytes: 32 * 8,
                ..p("fence_values", 16, cnt(4), 8, U64, Dir::In)
            },
        ],
        vmbus: &[v(a(26), "async when async_msg_enabled; device field set")],
        ..e(
            "LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMCPU",
            0x31,
            &SignalSyncObjectFromCpu::DESC,
            "dxgkio_signal_sync_object_cpu",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[
            p("objects", 8, cnt(4), 4, HANDLE, Dir::In),
            p("monitored_fence_values", 16, cnt(4), 8, U64, Dir::In),
        ],
        vmbus: &[v(a(26), "async when async_msg_enabled")],
        ..e(
            "LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU",
            0x32,
            &SignalSyncObjectFromGpu::DESC,
            "dxgkio_signal_sync_object_gpu",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[
            p("objects", 8, cnt(0), 4, HANDLE, Dir::In),
            p("contexts", 24, cnt(20), 4, HANDLE, Dir::In),
            PointerDesc {
                cond: Cond::BitClear { offset: 16, bit: 1 },
                note: "with flags.enqueue_cpu_event the union holds an eventfd instead",
                ..p("monitored_fence_values", 32, cnt(0), 8, U64, Dir::In)
            },
        ],
        handles: &[he(
            TakesFd,
            f("cpu_event_handle", 32, 8),
            T::EventFd,
            "flags.enqueue_cpu_event (object_count must be 0)",
        )],
        vmbus: &[v(a(26), "async when async_msg_enabled")],
        ..e(
            "LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU2",
            0x33,
            &SignalSyncObjectFromGpu2::DESC,
            "dxgkio_signal_sync_object_gpu2",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[
            p("written_primaries", 48, cnt(40), 4, HANDLE, Dir::In),
            p("priv_drv_data", 32, bytes(28), 1, BYTES, Dir::In),
        ],
        vmbus: &[v(a(52), "async when async_msg_enabled")],
        note: "command_buffer is a GPU VA",
        ..e(
            "LX_DXSUBMITCOMMANDTOHWQUEUE",
            0x34,
            &SubmitCommandToHwQueue::DESC,
            "dxgkio_submit_command_to_hwqueue",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[
            PointerDesc {
                max_bytes: 64 * 4,
                ..p("hwqueues", 8, cnt(4), 4, HANDLE, Dir::In)
            },
            PointerDesc {
                max_bytes: 32 * 4,
                ..p("objects", 24, cnt(16), 4, HANDLE, Dir::In)
            },
            PointerDesc {
                max_bytes: 32 * 8,
                ..p("fence_values", 32, cnt(16), 8, U64, Dir::In)
            },
        ],
        vmbus: &[v(
            a(26),
            "async when async_msg_enabled; hwqueues passed as contexts",
        )],
        ..e(
            "LX_DXSUBMITSIGNALSYNCOBJECTSTOHWQUEUE",
            0x35,
            &SubmitSignalSyncObjectsToHwQueue::DESC,
            "dxgkio_submit_signal_to_hwqueue",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[
            PointerDesc {
                max_bytes: 32 * 4,
                ..p("objects", 8, cnt(4), 4, HANDLE, Dir::In)
            },
            PointerDesc {
                max_bytes: 32 * 8,
                ..p("fence_values", 16, cnt(4), 8, U64, Dir::In)
            },
        ],
        vmbus: &[v(a(25), "async when async_msg_enabled; legacy=0")],
        ..e(
            "LX_DXSUBMITWAITFORSYNCOBJECTSTOHWQUEUE",
            0x36,
            &SubmitWaitForSyncObjectsToHwQueue::DESC,
            "dxgkio_submit_wait_to_hwqueue",
        )
    },
    IoctlDesc {
        vmbus: &[v(
            a(24),
            "unless the IO-space mapping refcount is still > 0",
        )],
        ..e("LX_DXUNLOCK2", 0x37, &Unlock2::DESC, "dxgkio_unlock2")
    },
    IoctlDesc {
        handles: &[he(
            HostValue,
            f("paging_fence_value", 24, 8),
            T::Any,
            "only when the host returns STATUS_PENDING",
        )],
        vmbus: &[v(a(56), "")],
        ..e(
            "LX_DXUPDATEALLOCPROPERTY",
            0x38,
            &UpdateAllocProperty::DESC,
            "dxgkio_update_alloc_property",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[PointerDesc {
            note: "num_operations 1..2048",
            ..p(
                "operations",
                16,
                cnt(12),
                64,
                Kind::Struct(&UpdateGpuVaOperation::DESC),
                Dir::In,
            )
        }],
        handles: &[he(HostValue, f("fence_value", 40, 8), T::Any, "")],
        vmbus: &[v(a(19), "")],
        ..e(
            "LX_DXUPDATEGPUVIRTUALADDRESS",
            0x39,
            &UpdateGpuVa::DESC,
            "dxgkio_update_gpu_va",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[
            p("objects", 8, cnt(4), 4, HANDLE, Dir::In),
            p("fence_values", 16, cnt(4), 8, U64, Dir::In),
        ],
        handles: &[he(
            TakesFd,
            f("async_event", 24, 8),
            T::EventFd,
            "async_event != 0 (returns at once)",
        )],
        vmbus: &[v(
            a(22),
            "sync; completion arrives later as host→guest SIGNALGUESTEVENT",
        )],
        note: "without async_event the ioctl blocks until the host signals",
        ..e(
            "LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMCPU",
            0x3a,
            &WaitSyncObjectFromCpu::DESC,
            "dxgkio_wait_sync_object_cpu",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[
            p("objects", 8, cnt(4), 4, HANDLE, Dir::In),
            PointerDesc {
                cond: Cond::BestEffort,
                note: "a pointer only if objects[0] is a monitored fence; otherwise fence_value inline",
                ..p("monitored_fence_values", 16, cnt(4), 8, U64, Dir::In)
            },
        ],
        vmbus: &[v(a(25), "async when async_msg_enabled")],
        ..e(
            "LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMGPU",
            0x3b,
            &WaitSyncObjectFromGpu::DESC,
            "dxgkio_wait_sync_object_gpu",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[
            p("allocation_list", 8, cnt(16), 4, HANDLE, Dir::In),
            p(
                "priorities",
                24,
                PtrLen::CountOr1IfNonZero {
                    offset: 16,
                    nonzero_offset: 4,
                },
                4,
                Kind::U,
                Dir::Out,
            ),
        ],
        vmbus: &[v(a(60), "")],
        ..e(
            "LX_DXGETALLOCATIONPRIORITY",
            0x3c,
            &GetAllocationPriority::DESC,
            "dxgkio_get_allocation_priority",
        )
    },
    IoctlDesc {
        handles: &[he(HostValue, f("clock_data", 12, 28), T::Any, "")],
        vmbus: &[v(a(62), "")],
        note: "packed struct; clock_data copied out before the NTSTATUS is checked",
        ..e(
            "LX_DXQUERYCLOCKCALIBRATION",
            0x3d,
            &QueryClockCalibration::DESC,
            "dxgkio_query_clock_calibration",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[PointerDesc {
            max_bytes: 0xFFFF * 20,
            note: "NULL or count 0 → only adapter_count written",
            ..p(
                "adapters",
                16,
                cnt(8),
                20,
                Kind::Struct(&AdapterInfo::DESC),
                Dir::Out,
            )
        }],
        handles: &[he(
            Creates,
            Loc::Elem {
                pointer: "adapters",
                offset: 0,
                size: 4,
            },
            T::Adapter,
            "one per returned adapter",
        )],
        ..e(
            "LX_DXENUMADAPTERS3",
            0x3e,
            &EnumAdapters3::DESC,
            "dxgkio_enum_adapters3",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[PointerDesc {
            max_bytes: 4,
            note: "object_count must be 1",
            ..p("objects", 8, cnt(0), 4, HANDLE, Dir::In)
        }],
        handles: &[he(
            ReturnsFd,
            f("shared_handle", 32, 8),
            T::SharedObjectFd,
            "anon inode dxgsyncobj/dxgresource, O_CLOEXEC",
        )],
        vmbus: &[
            v(g(1004), "first share of the object"),
            v(g(1005), "when the last fd reference goes"),
        ],
        note: "shared_handle is a u64 output field (not a pointer); object_attr unused",
        ..e(
            "LX_DXSHAREOBJECTS",
            0x3f,
            &ShareObjects::DESC,
            "dxgkio_share_objects",
        )
    },
    IoctlDesc {
        handles: &[
            he(TakesFd, f("nt_handle", 0, 8), T::SharedObjectFd, ""),
            he(Creates, f("sync_object", 16, 4), T::SyncObject, ""),
            he(
                MapsVa,
                f("monitored_fence.fence_value_cpu_va", 24, 8),
                T::Mapping,
                "1 page",
            ),
            he(
                HostValue,
                f("monitored_fence.fence_value_gpu_va", 32, 8),
                T::Any,
                "",
            ),
        ],
        vmbus: &[v(g(1002), ""), v(g(1003), "on rollback")],
        ..e(
            "LX_DXOPENSYNCOBJECTFROMNTHANDLE2",
            0x40,
            &OpenSyncObjectFromNtHandle2::DESC,
            "dxgkio_open_sync_object_nt",
        )
    },
    IoctlDesc {
        handles: &[he(TakesFd, f("nt_handle", 8, 8), T::SharedObjectFd, "")],
        note: "answered from guest state; private_runtime_data is not written",
        ..e(
            "LX_DXQUERYRESOURCEINFOFROMNTHANDLE",
            0x41,
            &QueryResourceInfoFromNtHandle::DESC,
            "dxgkio_query_resource_info_nt",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[
            PointerDesc {
                note: "each open_alloc_info[i].priv_drv_data is set to point into total_priv_drv_data",
                ..p(
                    "open_alloc_info",
                    24,
                    cnt(16),
                    80,
                    Kind::Struct(&OpenAllocationInfo2::DESC),
                    Dir::Out,
                )
            },
            p("private_runtime_data", 40, bytes(32), 1, BYTES, Dir::Out),
            p("resource_priv_drv_data", 56, bytes(48), 1, BYTES, Dir::Out),
            p("total_priv_drv_data", 72, bytes(64), 1, BYTES, Dir::Out),
        ],
        handles: &[
            he(TakesFd, f("nt_handle", 8, 8), T::SharedObjectFd, ""),
            he(Creates, f("resource", 80, 4), T::Resource, ""),
            he(
                Creates,
                Loc::Elem {
                    pointer: "open_alloc_info",
                    offset: 0,
                    size: 4,
                },
                T::Allocation,
                "",
            ),
        ],
        vmbus: &[v(a(32), ""), v(a(5), "on rollback")],
        ..e(
            "LX_DXOPENRESOURCEFROMNTHANDLE",
            0x42,
            &OpenResourceFromNtHandle::DESC,
            "dxgkio_open_resource_nt",
        )
    },
    IoctlDesc {
        vmbus: &[v(
            a(48),
            "header process = host handle of the target process",
        )],
        note: "process = a Linux pid or 0",
        ..e(
            "LX_DXQUERYSTATISTICS",
            0x43,
            &QueryStatistics::DESC,
            "dxgkio_query_statistics",
        )
    },
    IoctlDesc {
        handles: &[he(
            HostValue,
            f("object_vail_nt_handle", 16, 8),
            T::HostNtHandle,
            "",
        )],
        vmbus: &[v(g(1021), "")],
        ..e(
            "LX_DXSHAREOBJECTWITHHOST",
            0x44,
            &ShareObjectWithHost::DESC,
            "dxgkio_share_object_with_host",
        )
    },
    IoctlDesc {
        handles: &[he(
            ReturnsFd,
            f("sync_file_handle", 16, 8),
            T::SyncFileFd,
            "O_CLOEXEC",
        )],
        vmbus: &[
            v(g(1004), "if the fence is shared"),
            v(a(22), "with a host-event id; later SIGNALGUESTEVENT"),
        ],
        ..e(
            "LX_DXCREATESYNCFILE",
            0x45,
            &CreateSyncFile::DESC,
            "dxgkio_create_sync_file",
        )
    },
    IoctlDesc {
        handles: &[he(TakesFd, f("sync_file_handle", 0, 8), T::SyncFileFd, "")],
        vmbus: &[
            v(g(1002), ""),
            v(a(25), "async when async_msg_enabled"),
            v(g(1003), ""),
        ],
        ..e(
            "LX_DXWAITSYNCFILE",
            0x46,
            &WaitSyncFile::DESC,
            "dxgkio_wait_sync_file",
        )
    },
    IoctlDesc {
        handles: &[
            he(TakesFd, f("sync_file_handle", 0, 8), T::SyncFileFd, ""),
            he(Creates, f("syncobj", 12, 4), T::SyncObject, ""),
            he(HostValue, f("fence_value", 16, 8), T::Any, ""),
            he(MapsVa, f("fence_value_cpu_va", 24, 8), T::Mapping, "1 page"),
            he(HostValue, f("fence_value_gpu_va", 32, 8), T::Any, ""),
        ],
        vmbus: &[v(g(1002), "")],
        ..e(
            "LX_DXOPENSYNCOBJECTFROMSYNCFILE",
            0x47,
            &OpenSyncObjectFromSyncFile::DESC,
            "dxgkio_open_syncobj_from_syncfile",
        )
    },
    IoctlDesc {
        class: PC,
        pointers: &[PointerDesc {
            note: "pids in the caller's pid namespace; buffer_count written back as u32",
            ..p(
                "buffer",
                8,
                PtrLen::Count {
                    offset: 16,
                    size: 8,
                },
                4,
                Kind::U,
                Dir::Out,
            )
        }],
        ..e(
            "LX_DXENUMPROCESSES",
            0x48,
            &EnumProcesses::DESC,
            "dxgkio_enum_processes",
        )
    },
    IoctlDesc {
        vmbus: &[v(a(68), "")],
        ..e(
            "LX_ISFEATUREENABLED",
            0x49,
            &IsFeatureEnabled::DESC,
            "dxgkio_is_feature_enabled",
        )
    },
];
