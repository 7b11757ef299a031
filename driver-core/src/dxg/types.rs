//! `#[repr(C)]` mirrors of the final uapi header's ioctl structs (x86_64 layout), the
//! nested structs, and the enum / flag names used to render them.
//!
//! Implicit C padding is spelled out as `_padN` fields (kind `Pad`) so that every mirror is
//! [`Pod`](crate::layout::Pod). Unions are flattened to the member the decoder shows; the
//! field list notes which.

#![allow(missing_docs)]

use crate::layout::Kind::{self, *};
use crate::layout::{EnumDesc, FlagsDesc, layout};

// ---------------------------------------------------------------- enums

pub const CLIENT_HINT: EnumDesc = EnumDesc {
    name: "d3dkmt_clienthint",
    values: &[
        (0, "UNKNOWN"),
        (1, "OPENGL"),
        (2, "CDD"),
        (7, "DX7"),
        (8, "DX8"),
        (9, "DX9"),
        (10, "DX10"),
    ],
};
pub const PAGINGQUEUE_PRIORITY: EnumDesc = EnumDesc {
    name: "d3dddi_pagingqueue_priority",
    values: &[(-1, "BELOW_NORMAL"), (0, "NORMAL"), (1, "ABOVE_NORMAL")],
};
pub const ESCAPE_TYPE: EnumDesc = EnumDesc {
    name: "d3dkmt_escapetype",
    values: &[
        (0, "DRIVERPRIVATE"),
        (1, "VIDMM"),
        (3, "VIDSCH"),
        (4, "DEVICE"),
        (8, "DRT_TEST"),
    ],
};
pub const KNOWN_ESCAPE: EnumDesc = EnumDesc {
    name: "d3dddi_knownescapetype",
    values: &[
        (0, "TRANSLATEALLOCATIONHANDLE"),
        (1, "TRANSLATERESOURCEHANDLE"),
        (2, "CPUEVENTUSAGE"),
        (3, "BUILDTESTCOMMANDBUFFER"),
    ],
};
pub const DEVICESTATE_TYPE: EnumDesc = EnumDesc {
    name: "d3dkmt_devicestate_type",
    values: &[
        (1, "EXECUTION"),
        (2, "PRESENT"),
        (3, "RESET"),
        (4, "PRESENT_DWM"),
        (5, "PAGE_FAULT"),
        (6, "PRESENT_QUEUE"),
    ],
};
pub const SYNCOBJ_TYPE: EnumDesc = EnumDesc {
    name: "d3dddi_synchronizationobject_type",
    values: &[
        (1, "SYNCHRONIZATION_MUTEX"),
        (2, "SEMAPHORE"),
        (3, "FENCE"),
        (4, "CPU_NOTIFICATION"),
        (5, "MONITORED_FENCE"),
        (6, "PERIODIC_MONITORED_FENCE"),
    ],
};
pub const QAI_TYPE: EnumDesc = EnumDesc {
    name: "kmtqueryadapterinfotype",
    values: &[
        (0, "UMDRIVERPRIVATE"),
        (1, "UMDRIVERNAME"),
        (15, "ADAPTERTYPE"),
        (30, "PHYSICALADAPTERCOUNT"),
        (48, "QUERYREGISTRY"),
        (57, "ADAPTERTYPE_RENDER"),
        (65, "DRIVER_DESCRIPTION"),
        (66, "DRIVER_DESCRIPTION_RENDER"),
    ],
};
pub const MEMORY_SEGMENT_GROUP: EnumDesc = EnumDesc {
    name: "d3dkmt_memory_segment_group",
    values: &[(0, "LOCAL"), (1, "NON_LOCAL")],
};
pub const RESERVATION_TYPE: EnumDesc = EnumDesc {
    name: "d3dddigpuva_reservation_type",
    values: &[(0, "NO_ACCESS"), (1, "ZERO"), (2, "NO_COMMIT")],
};
pub const OFFER_PRIORITY: EnumDesc = EnumDesc {
    name: "d3dkmt_offer_priority",
    values: &[(1, "LOW"), (2, "NORMAL"), (3, "HIGH"), (4, "AUTO")],
};
pub const DEVICE_ERROR_REASON: EnumDesc = EnumDesc {
    name: "d3dkmt_device_error_reason",
    values: &[(0x8000_0000, "GENERIC"), (0x8000_0006, "DRIVER_ERROR")],
};
pub const QUERYSTATS_TYPE: EnumDesc = EnumDesc {
    name: "d3dkmt_querystatistics_type",
    values: &[
        (0, "ADAPTER"),
        (1, "PROCESS"),
        (2, "PROCESS_ADAPTER"),
        (3, "SEGMENT"),
        (4, "PROCESS_SEGMENT"),
        (5, "NODE"),
        (6, "PROCESS_NODE"),
        (7, "VIDPNSOURCE"),
        (8, "PROCESS_VIDPNSOURCE"),
        (9, "PROCESS_SEGMENT_GROUP"),
        (10, "PHYSICAL_ADAPTER"),
    ],
};
pub const FEATURE_ID: EnumDesc = EnumDesc {
    name: "dxgk_feature_id",
    values: &[
        (0, "HWSCH"),
        (32, "PAGE_BASED_MEMORY_MANAGER"),
        (33, "KERNEL_MODE_TESTING"),
    ],
};
pub const UPDATEGPUVA_OP: EnumDesc = EnumDesc {
    name: "d3dddi_updategpuvirtualaddress_operation_type",
    values: &[(0, "MAP"), (1, "UNMAP"), (2, "COPY"), (3, "MAP_PROTECT")],
};
pub const STANDARD_ALLOC_TYPE: EnumDesc = EnumDesc {
    name: "d3dkmt_standardallocationtype",
    values: &[(1, "EXISTINGHEAP"), (2, "CROSSADAPTER")],
};
pub const RESIDENCY_STATUS: EnumDesc = EnumDesc {
    name: "d3dkmt_allocationresidencystatus",
    values: &[
        (1, "RESIDENTINGPUMEMORY"),
        (2, "RESIDENTINSHAREDMEMORY"),
        (3, "NOTRESIDENT"),
    ],
};
pub const RECLAIM_RESULT: EnumDesc = EnumDesc {
    name: "d3dddi_reclaim_result",
    values: &[(0, "OK"), (1, "DISCARDED"), (2, "NOT_COMMITTED")],
};
pub const EXECUTION_STATE: EnumDesc = EnumDesc {
    name: "d3dkmt_deviceexecution_state",
    values: &[
        (1, "ACTIVE"),
        (2, "RESET"),
        (3, "HUNG"),
        (4, "STOPPED"),
        (5, "ERROR_OUTOFMEMORY"),
        (6, "ERROR_DMAFAULT"),
        (7, "ERROR_DMAPAGEFAULT"),
    ],
};

// ---------------------------------------------------------------- flags

pub const CREATEDEVICE_FLAGS: FlagsDesc = FlagsDesc {
    name: "d3dkmt_createdeviceflags",
    bits: &[
        (0, "legacy_mode"),
        (1, "request_vSync"),
        (2, "disable_gpu_timeout"),
        (3, "gdi_device"),
    ],
};
pub const CREATECONTEXT_FLAGS: FlagsDesc = FlagsDesc {
    name: "d3dddi_createcontextflags",
    bits: &[
        (0, "null_rendering"),
        (1, "initial_data"),
        (2, "disable_gpu_timeout"),
        (3, "synchronization_only"),
        (4, "hw_queue_supported"),
    ],
};
pub const CREATEHWQUEUE_FLAGS: FlagsDesc = FlagsDesc {
    name: "d3dddi_createhwqueueflags",
    bits: &[(0, "disable_gpu_timeout")],
};
pub const ESCAPE_FLAGS: FlagsDesc = FlagsDesc {
    name: "d3dddi_escapeflags",
    bits: &[
        (0, "hardware_access"),
        (1, "device_status_query"),
        (2, "change_frame_latency"),
        (3, "no_adapter_synchronization"),
        (5, "virtual_machine_data"),
        (6, "driver_known_escape"),
        (7, "driver_common_escape"),
    ],
};
pub const SYNCOBJ_FLAGS: FlagsDesc = FlagsDesc {
    name: "d3dddi_synchronizationobject_flags",
    bits: &[
        (0, "shared"),
        (1, "nt_security_sharing"),
        (2, "cross_adapter"),
        (3, "top_of_pipeline"),
        (4, "no_signal"),
        (5, "no_wait"),
        (6, "no_signal_max_value_on_tdr"),
        (7, "no_gpu_access"),
    ],
};
pub const SIGNAL_FLAGS: FlagsDesc = FlagsDesc {
    name: "d3dddicb_signalflags",
    bits: &[
        (0, "signal_at_submission"),
        (1, "enqueue_cpu_event"),
        (2, "allow_fence_rewind"),
        (31, "DXGK_SIGNAL_FLAG_INTERNAL0"),
    ],
};
pub const WAITCPU_FLAGS: FlagsDesc = FlagsDesc {
    name: "d3dddi_waitforsynchronizationobjectfromcpu_flags",
    bits: &[(0, "wait_any")],
};
pub const SUBMIT_FLAGS: FlagsDesc = FlagsDesc {
    name: "d3dkmt_submitcommandflags",
    bits: &[(0, "null_rendering"), (1, "present_redirected")],
};
pub const ALLOCINFO_FLAGS: FlagsDesc = FlagsDesc {
    name: "d3dddi_allocationinfo2.flags",
    bits: &[(0, "primary"), (1, "stereo"), (2, "override_priority")],
};
pub const CREATEALLOC_FLAGS: FlagsDesc = FlagsDesc {
    name: "d3dkmt_createallocationflags",
    bits: &[
        (0, "create_resource"),
        (1, "create_shared"),
        (2, "non_secure"),
        (3, "create_protected"),
        (4, "restrict_shared_access"),
        (5, "existing_sysmem"),
        (6, "nt_security_sharing"),
        (7, "read_only"),
        (8, "create_write_combined"),
        (9, "create_cached"),
        (10, "swap_chain_back_buffer"),
        (11, "cross_adapter"),
        (12, "open_cross_adapter"),
        (13, "partial_shared_creation"),
        (14, "zeroed"),
        (15, "write_watch"),
        (16, "standard_allocation"),
        (17, "existing_section"),
    ],
};
pub const DESTROYALLOC_FLAGS: FlagsDesc = FlagsDesc {
    name: "d3dddicb_destroyallocation2flags",
    bits: &[
        (0, "assume_not_in_use"),
        (1, "synchronous_destroy"),
        (31, "system_use_only"),
    ],
};
pub const MAKERESIDENT_FLAGS: FlagsDesc = FlagsDesc {
    name: "d3dddi_makeresident_flags",
    bits: &[(0, "cant_trim_further"), (1, "must_succeed")],
};
pub const EVICT_FLAGS: FlagsDesc = FlagsDesc {
    name: "d3dddi_evict_flags",
    bits: &[(0, "evict_only_if_necessary"), (1, "not_written_to")],
};
pub const GPUVA_PROTECTION: FlagsDesc = FlagsDesc {
    name: "d3dddigpuva_protection_type",
    bits: &[
        (0, "write"),
        (1, "execute"),
        (2, "zero"),
        (3, "no_access"),
        (4, "system_use_only"),
    ],
};
pub const UPDATEGPUVA_FLAGS: FlagsDesc = FlagsDesc {
    name: "d3dkmt_updategpuvirtualaddress.flags",
    bits: &[(0, "do_not_wait")],
};
pub const OFFER_FLAGS: FlagsDesc = FlagsDesc {
    name: "d3dkmt_offer_flags",
    bits: &[(0, "offer_immediately"), (1, "allow_decommit")],
};
pub const ENUMADAPTERS_FILTER: FlagsDesc = FlagsDesc {
    name: "d3dkmt_enumadapters_filter",
    bits: &[(0, "include_compute_only"), (1, "include_display_only")],
};
pub const CLOCK_FLAGS: FlagsDesc = FlagsDesc {
    name: "dxgk_gpuclockdata_flags",
    bits: &[(0, "context_management_processor")],
};
pub const UPDATEALLOCPROP_FLAGS: FlagsDesc = FlagsDesc {
    name: "d3dddi_updateallocproperty_flags",
    bits: &[(0, "accessed_physically")],
};
pub const PROPERTY_MASK: FlagsDesc = FlagsDesc {
    name: "d3dddi_updateallocproperty.property_mask",
    bits: &[
        (0, "set_accessed_physically"),
        (1, "set_supported_segmentSet"),
        (2, "set_preferred_segment"),
    ],
};
pub const FEATURE_RESULT_FLAGS: FlagsDesc = FlagsDesc {
    name: "dxgk_isfeatureenabled_result.value",
    bits: &[
        (0, "enabled"),
        (1, "known_feature"),
        (2, "supported_by_driver"),
        (3, "supported_on_config"),
    ],
};
pub const NO_FLAGS: FlagsDesc = FlagsDesc {
    name: "flags",
    bits: &[],
};

const H: Kind = Handle;
const HANDLE_ELEM: Kind = Handle;
const U64_ELEM: Kind = Hex;

// ---------------------------------------------------------------- nested structs

layout!(WinLuid = "winluid", 8 { a: u32 => Hex, b: u32 => Hex });

layout!(AdapterInfo = "d3dkmt_adapterinfo", 20 {
    adapter_handle: u32 => H,
    adapter_luid: [u32; 2] => Luid,
    num_sources: u32 => U,
    present_move_regions_preferred: u32 => U,
});

layout!(AllocationInfo2 = "d3dddi_allocationinfo2", 96 {
    allocation: u32 => H,
    _pad0: u32 => Pad,
    sysmem: u64 => Pointer,
    priv_drv_data: u64 => Pointer,
    priv_drv_data_size: u32 => U,
    vidpn_source_id: u32 => U,
    flags: u32 => Flags(&ALLOCINFO_FLAGS),
    _pad1: u32 => Pad,
    gpu_virtual_address: u64 => Hex,
    /// union { u32 priority; u64 unused; }
    priority: u64 => U,
    reserved: [u64; 5] => Bytes,
});

layout!(OpenAllocationInfo2 = "d3dddi_openallocationinfo2", 80 {
    allocation: u32 => H,
    _pad0: u32 => Pad,
    priv_drv_data: u64 => Pointer,
    priv_drv_data_size: u32 => U,
    _pad1: u32 => Pad,
    gpu_va: u64 => Hex,
    reserved: [u64; 6] => Bytes,
});

layout!(CreateStandardAllocation = "d3dkmt_createstandardallocation", 24 {
    type_ as "type": u32 => Enum(&STANDARD_ALLOC_TYPE),
    reserved: u32 => U,
    existing_heap_size: u64 => Hex,
    flags: u32 => Hex,
    reserved1: u32 => U,
});

layout!(BuildTestCommandBuffer = "d3dddi_buildtestcommandbuffer", 112 {
    escape_type: u32 => Enum(&KNOWN_ESCAPE),
    device: u32 => H,
    context: u32 => H,
    flags: u32 => Hex,
    command: [u8; 72] => Bytes,
    dma_buffer: u64 => Pointer,
    dma_buffer_priv_data: u64 => Pointer,
    dma_buffer_size: u32 => U,
    dma_buffer_priv_data_size: u32 => U,
});

layout!(SyncObjectInfo2 = "d3dddi_synchronizationobjectinfo2", 80 {
    type_ as "type": u32 => Enum(&SYNCOBJ_TYPE),
    flags: u32 => Flags(&SYNCOBJ_FLAGS),
    /// union: mutex/semaphore/fence/cpu_notification/monitored_fence/periodic/reserved[8];
    /// for MONITORED_FENCE: initial_fence_value @8, fence_cpu_virtual_address @16,
    /// fence_gpu_virtual_address @24, engine_affinity @32.
    params: [u64; 8] => Array(&U64_ELEM, 8),
    shared_handle: u32 => H,
    _pad0: u32 => Pad,
});

layout!(UpdateGpuVaOperation = "d3dddi_updategpuvirtualaddress_operation", 64 {
    operation: u32 => Enum(&UPDATEGPUVA_OP),
    _pad0: u32 => Pad,
    /// union member map/map_protect base_address, unmap base_address, copy source_address
    base_address: u64 => Hex,
    size: u64 => Hex,
    /// map: allocation handle (low 32 bits); unmap: protection; copy: dest_address
    allocation: u64 => Hex,
    allocation_offset: u64 => Hex,
    allocation_size: u64 => Hex,
    protection: u64 => Flags(&GPUVA_PROTECTION),
    driver_protection: u64 => Hex,
});

layout!(packed GpuClockData = "dxgk_gpuclockdata", 28 {
    gpu_frequency: u64 => U,
    gpu_clock_counter: u64 => U,
    cpu_clock_counter: u64 => U,
    flags: u32 => Flags(&CLOCK_FLAGS),
});

layout!(FeatureResult = "dxgk_isfeatureenabled_result", 4 {
    version: u16 => U,
    value: u16 => Flags(&FEATURE_RESULT_FLAGS),
});

// ---------------------------------------------------------------- ioctl structs

layout!(OpenAdapterFromLuid = "d3dkmt_openadapterfromluid", 12 {
    adapter_luid: [u32; 2] => Luid,
    adapter_handle: u32 => H,
});

layout!(CreateDevice = "d3dkmt_createdevice", 64 {
    adapter: u32 => H,
    reserved3: u32 => U,
    flags: u32 => Flags(&CREATEDEVICE_FLAGS),
    device: u32 => H,
    command_buffer: u64 => Pointer,
    command_buffer_size: u32 => U,
    reserved: u32 => U,
    allocation_list: u64 => Pointer,
    allocation_list_size: u32 => U,
    reserved1: u32 => U,
    patch_location_list: u64 => Pointer,
    patch_location_list_size: u32 => U,
    reserved2: u32 => U,
});

layout!(CreateContextVirtual = "d3dkmt_createcontextvirtual", 40 {
    device: u32 => H,
    node_ordinal: u32 => U,
    engine_affinity: u32 => Hex,
    flags: u32 => Flags(&CREATECONTEXT_FLAGS),
    priv_drv_data: u64 => Pointer,
    priv_drv_data_size: u32 => U,
    client_hint: i32 => Enum(&CLIENT_HINT),
    context: u32 => H,
    _pad0: u32 => Pad,
});

layout!(DestroyContext = "d3dkmt_destroycontext", 4 { context: u32 => H });

layout!(CreateAllocation = "d3dkmt_createallocation", 72 {
    device: u32 => H,
    resource: u32 => H,
    global_share: u32 => H,
    reserved: u32 => U,
    private_runtime_data: u64 => Pointer,
    private_runtime_data_size: u32 => U,
    reserved1: u32 => U,
    /// union { standard_allocation; priv_drv_data; } (standard when flags bit 16)
    priv_drv_data: u64 => Pointer,
    priv_drv_data_size: u32 => U,
    alloc_count: u32 => U,
    allocation_info: u64 => Pointer,
    flags: u32 => Flags(&CREATEALLOC_FLAGS),
    reserved2: u32 => U,
    private_runtime_resource_handle: u64 => Hex,
});

layout!(CreatePagingQueue = "d3dkmt_createpagingqueue", 32 {
    device: u32 => H,
    priority: i32 => Enum(&PAGINGQUEUE_PRIORITY),
    paging_queue: u32 => H,
    sync_object: u32 => H,
    fence_cpu_virtual_address: u64 => Pointer,
    physical_adapter_index: u32 => U,
    _pad0: u32 => Pad,
});

layout!(ReserveGpuVa = "d3dddi_reservegpuvirtualaddress", 72 {
    adapter: u32 => H,
    _pad0: u32 => Pad,
    base_address: u64 => Hex,
    minimum_address: u64 => Hex,
    maximum_address: u64 => Hex,
    size: u64 => Hex,
    reservation_type: i32 => Enum(&RESERVATION_TYPE),
    _pad1: u32 => Pad,
    driver_protection: u64 => Hex,
    virtual_address: u64 => Hex,
    paging_fence_value: u64 => U,
});

layout!(QueryAdapterInfo = "d3dkmt_queryadapterinfo", 24 {
    adapter: u32 => H,
    type_ as "type": i32 => Enum(&QAI_TYPE),
    private_data: u64 => Pointer,
    private_data_size: u32 => U,
    _pad0: u32 => Pad,
});

layout!(QueryVideoMemoryInfo = "d3dkmt_queryvideomemoryinfo", 56 {
    process: u64 => Hex,
    adapter: u32 => H,
    memory_segment_group: i32 => Enum(&MEMORY_SEGMENT_GROUP),
    budget: u64 => U,
    current_usage: u64 => U,
    current_reservation: u64 => U,
    available_for_reservation: u64 => U,
    physical_adapter_index: u32 => U,
    _pad0: u32 => Pad,
});

layout!(MakeResident = "d3dddi_makeresident", 48 {
    paging_queue: u32 => H,
    alloc_count: u32 => U,
    allocation_list: u64 => Pointer,
    priority_list: u64 => Pointer,
    flags: u32 => Flags(&MAKERESIDENT_FLAGS),
    _pad0: u32 => Pad,
    paging_fence_value: u64 => U,
    num_bytes_to_trim: u64 => U,
});

layout!(MapGpuVa = "d3dddi_mapgpuvirtualaddress", 104 {
    paging_queue: u32 => H,
    _pad0: u32 => Pad,
    base_address: u64 => Hex,
    minimum_address: u64 => Hex,
    maximum_address: u64 => Hex,
    allocation: u32 => H,
    _pad1: u32 => Pad,
    offset_in_pages: u64 => Hex,
    size_in_pages: u64 => Hex,
    protection: u64 => Flags(&GPUVA_PROTECTION),
    driver_protection: u64 => Hex,
    reserved0: u32 => U,
    _pad2: u32 => Pad,
    reserved1: u64 => U,
    virtual_address: u64 => Hex,
    paging_fence_value: u64 => U,
});

layout!(Escape = "d3dkmt_escape", 32 {
    adapter: u32 => H,
    device: u32 => H,
    type_ as "type": i32 => Enum(&ESCAPE_TYPE),
    flags: u32 => Flags(&ESCAPE_FLAGS),
    priv_drv_data: u64 => Pointer,
    priv_drv_data_size: u32 => U,
    context: u32 => H,
});

layout!(GetDeviceState = "d3dkmt_getdevicestate", 56 {
    device: u32 => H,
    state_type: i32 => Enum(&DEVICESTATE_TYPE),
    /// union { execution_state; reset_state; page_fault_state; alignment[48] }
    execution_state: i32 => Enum(&EXECUTION_STATE),
    state_rest: [u8; 44] => Bytes,
});

layout!(SubmitCommand = "d3dkmt_submitcommand", 384 {
    command_buffer: u64 => Hex,
    command_length: u32 => U,
    flags: u32 => Flags(&SUBMIT_FLAGS),
    present_history_token: u64 => Hex,
    broadcast_context_count: u32 => U,
    broadcast_context: [u32; 64] => Array(&HANDLE_ELEM, 64),
    reserved: u32 => U,
    priv_drv_data: u64 => Pointer,
    priv_drv_data_size: u32 => U,
    num_primaries: u32 => U,
    written_primaries: [u32; 16] => Array(&HANDLE_ELEM, 16),
    num_history_buffers: u32 => U,
    reserved1: u32 => U,
    history_buffer_array: u64 => Pointer,
});

layout!(CreateSyncObject2 = "d3dkmt_createsynchronizationobject2", 96 {
    device: u32 => H,
    reserved: u32 => U,
    info: SyncObjectInfo2 => Struct(&SyncObjectInfo2::DESC),
    sync_object: u32 => H,
    reserved1: u32 => U,
});

layout!(SignalSyncObject2 = "d3dkmt_signalsynchronizationobject2", 464 {
    context: u32 => H,
    object_count: u32 => U,
    object_array: [u32; 32] => Array(&HANDLE_ELEM, 32),
    flags: u32 => Flags(&SIGNAL_FLAGS),
    context_count: u32 => U,
    contexts: [u32; 64] => Array(&HANDLE_ELEM, 64),
    /// union { fence.fence_value; cpu_event_handle; reserved[8] }
    fence_value: u64 => U,
    union_rest: [u64; 7] => Bytes,
});

layout!(WaitSyncObject2 = "d3dkmt_waitforsynchronizationobject2", 200 {
    context: u32 => H,
    object_count: u32 => U,
    object_array: [u32; 32] => Array(&HANDLE_ELEM, 32),
    /// union { fence.fence_value; reserved[8] }
    fence_value: u64 => U,
    union_rest: [u64; 7] => Bytes,
});

layout!(DestroyAllocation2 = "d3dkmt_destroyallocation2", 24 {
    device: u32 => H,
    resource: u32 => H,
    allocations: u64 => Pointer,
    alloc_count: u32 => U,
    flags: u32 => Flags(&DESTROYALLOC_FLAGS),
});

layout!(EnumAdapters2 = "d3dkmt_enumadapters2", 16 {
    num_adapters: u32 => U,
    reserved: u32 => U,
    adapters: u64 => Pointer,
});

layout!(CloseAdapter = "d3dkmt_closeadapter", 4 { adapter_handle: u32 => H });

layout!(ChangeVidMemReservation = "d3dkmt_changevideomemoryreservation", 32 {
    process: u64 => Hex,
    adapter: u32 => H,
    memory_segment_group: i32 => Enum(&MEMORY_SEGMENT_GROUP),
    reservation: u64 => U,
    physical_adapter_index: u32 => U,
    _pad0: u32 => Pad,
});

layout!(CreateHwQueue = "d3dkmt_createhwqueue", 48 {
    context: u32 => H,
    flags: u32 => Flags(&CREATEHWQUEUE_FLAGS),
    priv_drv_data_size: u32 => U,
    reserved: u32 => U,
    priv_drv_data: u64 => Pointer,
    queue: u32 => H,
    queue_progress_fence: u32 => H,
    queue_progress_fence_cpu_va: u64 => Pointer,
    queue_progress_fence_gpu_va: u64 => Hex,
});

layout!(DestroyDevice = "d3dkmt_destroydevice", 4 { device: u32 => H });
layout!(DestroyHwQueue = "d3dkmt_destroyhwqueue", 4 { queue: u32 => H });
layout!(DestroyPagingQueue = "d3dddi_destroypagingqueue", 4 { paging_queue: u32 => H });
layout!(DestroySyncObject = "d3dkmt_destroysynchronizationobject", 4 { sync_object: u32 => H });

layout!(Evict = "d3dkmt_evict", 32 {
    device: u32 => H,
    alloc_count: u32 => U,
    allocations: u64 => Pointer,
    flags: u32 => Flags(&EVICT_FLAGS),
    reserved: u32 => U,
    num_bytes_to_trim: u64 => U,
});

layout!(FlushHeapTransitions = "d3dkmt_flushheaptransitions", 4 { adapter: u32 => H });

layout!(FreeGpuVa = "d3dkmt_freegpuvirtualaddress", 24 {
    adapter: u32 => H,
    reserved: u32 => U,
    base_address: u64 => Hex,
    size: u64 => Hex,
});

layout!(GetContextInProcessSchedulingPriority = "d3dkmt_getcontextinprocessschedulingpriority", 8 {
    context: u32 => H,
    priority: i32 => I,
});
layout!(GetContextSchedulingPriority = "d3dkmt_getcontextschedulingpriority", 8 {
    context: u32 => H,
    priority: i32 => I,
});
layout!(SetContextInProcessSchedulingPriority = "d3dkmt_setcontextinprocessschedulingpriority", 8 {
    context: u32 => H,
    priority: i32 => I,
});
layout!(SetContextSchedulingPriority = "d3dkmt_setcontextschedulingpriority", 8 {
    context: u32 => H,
    priority: i32 => I,
});

layout!(InvalidateCache = "d3dkmt_invalidatecache", 24 {
    device: u32 => H,
    allocation: u32 => H,
    offset: u64 => Hex,
    length: u64 => Hex,
});

layout!(Lock2 = "d3dkmt_lock2", 24 {
    device: u32 => H,
    allocation: u32 => H,
    flags: u32 => Hex,
    reserved: u32 => U,
    data: u64 => Pointer,
});

layout!(MarkDeviceAsError = "d3dkmt_markdeviceaserror", 8 {
    device: u32 => H,
    reason: u32 => Enum(&DEVICE_ERROR_REASON),
});

layout!(OfferAllocations = "d3dkmt_offerallocations", 40 {
    device: u32 => H,
    reserved: u32 => U,
    resources: u64 => Pointer,
    allocations: u64 => Pointer,
    allocation_count: u32 => U,
    priority: i32 => Enum(&OFFER_PRIORITY),
    flags: u32 => Flags(&OFFER_FLAGS),
    reserved1: u32 => U,
});

layout!(QueryAllocationResidency = "d3dkmt_queryallocationresidency", 32 {
    device: u32 => H,
    resource: u32 => H,
    allocations: u64 => Pointer,
    allocation_count: u32 => U,
    reserved: u32 => U,
    residency_status: u64 => Pointer,
});

layout!(ReclaimAllocations2 = "d3dkmt_reclaimallocations2", 40 {
    paging_queue: u32 => H,
    allocation_count: u32 => U,
    resources: u64 => Pointer,
    allocations: u64 => Pointer,
    /// union { discarded; results; }
    results: u64 => Pointer,
    paging_fence_value: u64 => U,
});

layout!(SetAllocationPriority = "d3dkmt_setallocationpriority", 32 {
    device: u32 => H,
    resource: u32 => H,
    allocation_list: u64 => Pointer,
    allocation_count: u32 => U,
    reserved: u32 => U,
    priorities: u64 => Pointer,
});

layout!(GetAllocationPriority = "d3dkmt_getallocationpriority", 32 {
    device: u32 => H,
    resource: u32 => H,
    allocation_list: u64 => Pointer,
    allocation_count: u32 => U,
    reserved: u32 => U,
    priorities: u64 => Pointer,
});

layout!(SignalSyncObjectFromCpu = "d3dkmt_signalsynchronizationobjectfromcpu", 32 {
    device: u32 => H,
    object_count: u32 => U,
    objects: u64 => Pointer,
    fence_values: u64 => Pointer,
    flags: u32 => Flags(&SIGNAL_FLAGS),
    _pad0: u32 => Pad,
});

layout!(SignalSyncObjectFromGpu = "d3dkmt_signalsynchronizationobjectfromgpu", 80 {
    context: u32 => H,
    object_count: u32 => U,
    objects: u64 => Pointer,
    /// union { monitored_fence_values; reserved[8] }
    monitored_fence_values: u64 => Pointer,
    union_rest: [u64; 7] => Bytes,
});

layout!(SignalSyncObjectFromGpu2 = "d3dkmt_signalsynchronizationobjectfromgpu2", 96 {
    object_count: u32 => U,
    reserved1: u32 => U,
    objects: u64 => Pointer,
    flags: u32 => Flags(&SIGNAL_FLAGS),
    context_count: u32 => U,
    contexts: u64 => Pointer,
    /// union { fence_value; cpu_event_handle (eventfd if enqueue_cpu_event);
    /// monitored_fence_values (pointer); reserved[8] }
    monitored_fence_values: u64 => Hex,
    union_rest: [u64; 7] => Bytes,
});

layout!(SubmitCommandToHwQueue = "d3dkmt_submitcommandtohwqueue", 56 {
    hwqueue: u32 => H,
    reserved: u32 => U,
    hwqueue_progress_fence_id: u64 => U,
    command_buffer: u64 => Hex,
    command_length: u32 => U,
    priv_drv_data_size: u32 => U,
    priv_drv_data: u64 => Pointer,
    num_primaries: u32 => U,
    reserved1: u32 => U,
    written_primaries: u64 => Pointer,
});

layout!(SubmitSignalSyncObjectsToHwQueue = "d3dkmt_submitsignalsyncobjectstohwqueue", 40 {
    flags: u32 => Flags(&SIGNAL_FLAGS),
    hwqueue_count: u32 => U,
    hwqueues: u64 => Pointer,
    object_count: u32 => U,
    reserved: u32 => U,
    objects: u64 => Pointer,
    fence_values: u64 => Pointer,
});

layout!(SubmitWaitForSyncObjectsToHwQueue = "d3dkmt_submitwaitforsyncobjectstohwqueue", 24 {
    hwqueue: u32 => H,
    object_count: u32 => U,
    objects: u64 => Pointer,
    fence_values: u64 => Pointer,
});

layout!(Unlock2 = "d3dkmt_unlock2", 8 { device: u32 => H, allocation: u32 => H });

layout!(UpdateAllocProperty = "d3dddi_updateallocproperty", 40 {
    paging_queue: u32 => H,
    allocation: u32 => H,
    supported_segment_set: u32 => Hex,
    preferred_segment: u32 => Hex,
    flags: u32 => Flags(&UPDATEALLOCPROP_FLAGS),
    _pad0: u32 => Pad,
    paging_fence_value: u64 => U,
    property_mask_value: u32 => Flags(&PROPERTY_MASK),
    _pad1: u32 => Pad,
});

layout!(UpdateGpuVa = "d3dkmt_updategpuvirtualaddress", 56 {
    device: u32 => H,
    context: u32 => H,
    fence_object: u32 => H,
    num_operations: u32 => U,
    operations: u64 => Pointer,
    reserved0: u32 => U,
    reserved1: u32 => U,
    reserved2: u64 => U,
    fence_value: u64 => U,
    flags: u32 => Flags(&UPDATEGPUVA_FLAGS),
    reserved3: u32 => U,
});

layout!(WaitSyncObjectFromCpu = "d3dkmt_waitforsynchronizationobjectfromcpu", 40 {
    device: u32 => H,
    object_count: u32 => U,
    objects: u64 => Pointer,
    fence_values: u64 => Pointer,
    async_event: u64 => Fd,
    flags: u32 => Flags(&WAITCPU_FLAGS),
    _pad0: u32 => Pad,
});

layout!(WaitSyncObjectFromGpu = "d3dkmt_waitforsynchronizationobjectfromgpu", 80 {
    context: u32 => H,
    object_count: u32 => U,
    objects: u64 => Pointer,
    /// union { monitored_fence_values (pointer); fence_value; reserved[8] }
    monitored_fence_values: u64 => Hex,
    union_rest: [u64; 7] => Bytes,
});

layout!(packed QueryClockCalibration = "d3dkmt_queryclockcalibration", 40 {
    adapter: u32 => H,
    node_ordinal: u32 => U,
    physical_adapter_index: u32 => U,
    clock_data: GpuClockData => Struct(&GpuClockData::DESC),
});

layout!(EnumAdapters3 = "d3dkmt_enumadapters3", 24 {
    filter: u64 => Flags(&ENUMADAPTERS_FILTER),
    adapter_count: u32 => U,
    reserved: u32 => U,
    adapters: u64 => Pointer,
});

layout!(ShareObjects = "d3dkmt_shareobjects", 40 {
    object_count: u32 => U,
    reserved: u32 => U,
    objects: u64 => Pointer,
    object_attr: u64 => Pointer,
    desired_access: u32 => Hex,
    reserved1: u32 => U,
    shared_handle: u64 => Pointer,
});

layout!(OpenSyncObjectFromNtHandle2 = "d3dkmt_opensyncobjectfromnthandle2", 88 {
    nt_handle: u64 => Fd,
    device: u32 => H,
    flags: u32 => Flags(&SYNCOBJ_FLAGS),
    sync_object: u32 => H,
    reserved1: u32 => U,
    /// union { monitored_fence {fence_value_cpu_va, fence_value_gpu_va, engine_affinity};
    /// reserved[8] }
    fence_value_cpu_va: u64 => Pointer,
    fence_value_gpu_va: u64 => Hex,
    engine_affinity: u32 => Hex,
    union_rest: [u32; 11] => Bytes,
});

layout!(QueryResourceInfoFromNtHandle = "d3dkmt_queryresourceinfofromnthandle", 40 {
    device: u32 => H,
    reserved: u32 => U,
    nt_handle: u64 => Fd,
    private_runtime_data: u64 => Pointer,
    private_runtime_data_size: u32 => U,
    total_priv_drv_data_size: u32 => U,
    resource_priv_drv_data_size: u32 => U,
    allocation_count: u32 => U,
});

layout!(OpenResourceFromNtHandle = "d3dkmt_openresourcefromnthandle", 104 {
    device: u32 => H,
    reserved: u32 => U,
    nt_handle: u64 => Fd,
    allocation_count: u32 => U,
    reserved1: u32 => U,
    open_alloc_info: u64 => Pointer,
    private_runtime_data_size: i32 => I,
    reserved2: u32 => U,
    private_runtime_data: u64 => Pointer,
    resource_priv_drv_data_size: u32 => U,
    reserved3: u32 => U,
    resource_priv_drv_data: u64 => Pointer,
    total_priv_drv_data_size: u32 => U,
    _pad0: u32 => Pad,
    total_priv_drv_data: u64 => Pointer,
    resource: u32 => H,
    keyed_mutex: u32 => H,
    keyed_mutex_private_data: u64 => Pointer,
    keyed_mutex_private_data_size: u32 => U,
    sync_object: u32 => H,
});

layout!(QueryStatistics = "d3dkmt_querystatistics", 808 {
    /// union { struct { type; adapter_luid; process; result }; char size[808] }
    type_ as "type": i32 => Enum(&QUERYSTATS_TYPE),
    adapter_luid: [u32; 2] => Luid,
    _pad0: u32 => Pad,
    process: u64 => U,
    result: [u8; 776] => Bytes,
    union_rest: [u8; 8] => Bytes,
});

layout!(ShareObjectWithHost = "d3dkmt_shareobjectwithhost", 24 {
    device_handle: u32 => H,
    object_handle: u32 => H,
    reserved: u64 => U,
    object_vail_nt_handle: u64 => Hex,
});

layout!(CreateSyncFile = "d3dkmt_createsyncfile", 24 {
    device: u32 => H,
    monitored_fence: u32 => H,
    fence_value: u64 => U,
    sync_file_handle: u64 => Fd,
});

layout!(WaitSyncFile = "d3dkmt_waitsyncfile", 16 {
    sync_file_handle: u64 => Fd,
    context: u32 => H,
    reserved: u32 => U,
});

layout!(OpenSyncObjectFromSyncFile = "d3dkmt_opensyncobjectfromsyncfile", 40 {
    sync_file_handle: u64 => Fd,
    device: u32 => H,
    syncobj: u32 => H,
    fence_value: u64 => U,
    fence_value_cpu_va: u64 => Pointer,
    fence_value_gpu_va: u64 => Hex,
});

layout!(EnumProcesses = "d3dkmt_enumprocesses", 24 {
    adapter_luid: [u32; 2] => Luid,
    buffer: u64 => Pointer,
    buffer_count: u64 => U,
});

layout!(IsFeatureEnabled = "d3dkmt_isfeatureenabled", 12 {
    adapter: u32 => H,
    feature_id: i32 => Enum(&FEATURE_ID),
    result: FeatureResult => Struct(&FeatureResult::DESC),
});

/// Nested (non-ioctl) structs, for the `structs` list of the schema.
pub const NESTED_STRUCTS: &[&crate::layout::StructDesc] = &[
    &WinLuid::DESC,
    &AdapterInfo::DESC,
    &AllocationInfo2::DESC,
    &OpenAllocationInfo2::DESC,
    &CreateStandardAllocation::DESC,
    &BuildTestCommandBuffer::DESC,
    &SyncObjectInfo2::DESC,
    &UpdateGpuVaOperation::DESC,
    &GpuClockData::DESC,
    &FeatureResult::DESC,
];
