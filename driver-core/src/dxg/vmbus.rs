//! dxgkrnl VMBus protocol: headers, command enums, request/reply layouts (x86_64, `[1]`
//! array semantics as in the WSL source, so sizes match the reference's Appendix B), and
//! the mapping from a command to its request and reply layouts.

#![allow(missing_docs)]

use super::types::{
    CREATEALLOC_FLAGS, CREATECONTEXT_FLAGS, CREATEDEVICE_FLAGS, CREATEHWQUEUE_FLAGS,
    ChangeVidMemReservation, CreatePagingQueue, CreateSyncObject2, DESTROYALLOC_FLAGS,
    ESCAPE_FLAGS, ESCAPE_TYPE, EVICT_FLAGS, FEATURE_ID, FreeGpuVa, GetDeviceState, Lock2,
    MAKERESIDENT_FLAGS, MEMORY_SEGMENT_GROUP, MapGpuVa, MarkDeviceAsError, OFFER_FLAGS,
    OFFER_PRIORITY, QAI_TYPE, QueryAllocationResidency, QueryClockCalibration, QueryStatistics,
    ReserveGpuVa, SIGNAL_FLAGS, SYNCOBJ_FLAGS, SubmitCommand, SubmitCommandToHwQueue, Unlock2,
    UpdateAllocProperty, UpdateGpuVaOperation, WAITCPU_FLAGS,
};
use crate::layout::Kind::{self, *};
use crate::layout::{EnumDesc, FlagsDesc, StructDesc, layout};
use crate::schema::{VmbusChannel, VmbusCmd};

/// `DXG_MAX_VM_BUS_PACKET_SIZE`.
pub const MAX_PACKET_SIZE: u32 = 131072;

pub const CHANNEL_TYPE: EnumDesc = EnumDesc {
    name: "dxgkvmb_commandchanneltype",
    values: &[(0, "VGPU_TO_HOST"), (1, "VM_TO_HOST"), (2, "HOST_TO_VM")],
};

/// `enum dxgkvmb_commandtype_global` (1000–1023).
pub const GLOBAL_COMMANDS: EnumDesc = EnumDesc {
    name: "dxgkvmb_commandtype_global",
    values: &[
        (1000, "CREATEPROCESS"),
        (1001, "DESTROYPROCESS"),
        (1002, "OPENSYNCOBJECT"),
        (1003, "DESTROYSYNCOBJECT"),
        (1004, "CREATENTSHAREDOBJECT"),
        (1005, "DESTROYNTSHAREDOBJECT"),
        (1006, "SIGNALFENCE"),
        (1007, "NOTIFYPROCESSFREEZE"),
        (1008, "NOTIFYPROCESSTHAW"),
        (1009, "QUERYETWSESSION"),
        (1010, "SETIOSPACEREGION"),
        (1011, "COMPLETETRANSACTION"),
        (1021, "SHAREOBJECTWITHHOST"),
        (1022, "ISFEATUREENABLED_GLOBAL"),
        (1023, "INVALID_VM_TO_HOST"),
    ],
};

/// `enum dxgkvmb_commandtype` (0–69). 63 is unused.
pub const ADAPTER_COMMANDS: EnumDesc = EnumDesc {
    name: "dxgkvmb_commandtype",
    values: &[
        (0, "CREATEDEVICE"),
        (1, "DESTROYDEVICE"),
        (2, "QUERYADAPTERINFO"),
        (3, "DDIQUERYADAPTERINFO"),
        (4, "CREATEALLOCATION"),
        (5, "DESTROYALLOCATION"),
        (6, "CREATECONTEXTVIRTUAL"),
        (7, "DESTROYCONTEXT"),
        (8, "CREATESYNCOBJECT"),
        (9, "CREATEPAGINGQUEUE"),
        (10, "DESTROYPAGINGQUEUE"),
        (11, "MAKERESIDENT"),
        (12, "EVICT"),
        (13, "ESCAPE"),
        (14, "OPENADAPTER"),
        (15, "CLOSEADAPTER"),
        (16, "FREEGPUVIRTUALADDRESS"),
        (17, "MAPGPUVIRTUALADDRESS"),
        (18, "RESERVEGPUVIRTUALADDRESS"),
        (19, "UPDATEGPUVIRTUALADDRESS"),
        (20, "SUBMITCOMMAND"),
        (21, "QUERYVIDEOMEMORYINFO"),
        (22, "WAITFORSYNCOBJECTFROMCPU"),
        (23, "LOCK2"),
        (24, "UNLOCK2"),
        (25, "WAITFORSYNCOBJECTFROMGPU"),
        (26, "SIGNALSYNCOBJECT"),
        (27, "SIGNALFENCENTSHAREDBYREF"),
        (28, "GETDEVICESTATE"),
        (29, "MARKDEVICEASERROR"),
        (30, "ADAPTERSTOP"),
        (31, "SETQUEUEDLIMIT"),
        (32, "OPENRESOURCE"),
        (33, "SETCONTEXTSCHEDULINGPRIORITY"),
        (34, "PRESENTHISTORYTOKEN"),
        (35, "SETREDIRECTEDFLIPFENCEVALUE"),
        (36, "GETINTERNALADAPTERINFO"),
        (37, "FLUSHHEAPTRANSITIONS"),
        (38, "BLT"),
        (39, "DDIGETSTANDARDALLOCATIONDRIVERDATA"),
        (40, "CDDGDICOMMAND"),
        (41, "QUERYALLOCATIONRESIDENCY"),
        (42, "FLUSHDEVICE"),
        (43, "FLUSHADAPTER"),
        (44, "DDIGETNODEMETADATA"),
        (45, "SETEXISTINGSYSMEMSTORE"),
        (46, "ISSYNCOBJECTSIGNALED"),
        (47, "CDDSYNCGPUACCESS"),
        (48, "QUERYSTATISTICS"),
        (49, "CHANGEVIDEOMEMORYRESERVATION"),
        (50, "CREATEHWQUEUE"),
        (51, "DESTROYHWQUEUE"),
        (52, "SUBMITCOMMANDTOHWQUEUE"),
        (53, "GETDRIVERSTOREFILE"),
        (54, "READDRIVERSTOREFILE"),
        (55, "GETNEXTHARDLINK"),
        (56, "UPDATEALLOCATIONPROPERTY"),
        (57, "OFFERALLOCATIONS"),
        (58, "RECLAIMALLOCATIONS"),
        (59, "SETALLOCATIONPRIORITY"),
        (60, "GETALLOCATIONPRIORITY"),
        (61, "GETCONTEXTSCHEDULINGPRIORITY"),
        (62, "QUERYCLOCKCALIBRATION"),
        (64, "QUERYRESOURCEINFO"),
        (65, "LOGEVENT"),
        (66, "SETEXISTINGSYSMEMPAGES"),
        (67, "INVALIDATECACHE"),
        (68, "ISFEATUREENABLED"),
        (69, "INVALID"),
    ],
};

/// `enum dxgkvmb_commandtype_host_to_vm` (0–5).
pub const HOST_TO_GUEST_COMMANDS: EnumDesc = EnumDesc {
    name: "dxgkvmb_commandtype_host_to_vm",
    values: &[
        (0, "SIGNALGUESTEVENT"),
        (1, "PROPAGATEPRESENTHISTORYTOKEN"),
        (2, "SETGUESTDATA"),
        (3, "SIGNALGUESTEVENTPASSIVE"),
        (4, "SENDWNFNOTIFICATION"),
        (5, "INVALID_HOST_TO_VM"),
    ],
};

pub const VGPU_HDR_BITS: FlagsDesc = FlagsDesc {
    name: "dxgkvmb_command_vgpu_to_host.bits",
    bits: &[(8, "async_msg")],
};
pub const ADAPTERINFO_FLAGS: FlagsDesc = FlagsDesc {
    name: "getinternaladapterinfo.flags",
    bits: &[
        (0, "secure_virtual_machine"),
        (1, "virtual_machine_reset"),
        (2, "is_vail_supported"),
        (3, "hw_sch_enabled"),
        (4, "hw_sch_capable"),
        (5, "va_backed_vm"),
        (6, "async_msg_enabled"),
        (7, "hw_support_state0"),
        (8, "hw_support_state1"),
    ],
};
pub const ALLOC_VMB_FLAGS: FlagsDesc = FlagsDesc {
    name: "dxgkvmb_allocflags",
    bits: &[
        (0, "primary"),
        (1, "cdd_primary"),
        (2, "dod_primary"),
        (3, "overlay"),
        (5, "capture"),
        (11, "existing_sysmem"),
        (12, "stereo"),
        (13, "direct_flip"),
        (14, "hardware_protected"),
        (18, "protected"),
        (19, "cached"),
        (20, "independent_primary"),
    ],
};
pub const SETGUESTDATA_BITS: FlagsDesc = FlagsDesc {
    name: "setguestdata.bits",
    bits: &[(0, "dereference"), (1, "data_type0"), (2, "data_type1")],
};
pub const CREATEPROCESS_FLAGS: FlagsDesc = FlagsDesc {
    name: "createprocess.flags",
    bits: &[
        (0, "csrss_process"),
        (1, "dwm_process"),
        (2, "wow64_process"),
        (3, "linux_process"),
    ],
};
pub const FLUSH_REASON: EnumDesc = EnumDesc {
    name: "dxgdevice_flushschedulerreason",
    values: &[(4, "DEVICE_TERMINATE")],
};
pub const STDALLOC_TYPE: EnumDesc = EnumDesc {
    name: "d3dkmdt_standardallocationtype",
    values: &[
        (1, "SHAREDPRIMARYSURFACE"),
        (2, "SHADOWSURFACE"),
        (3, "STAGINGSURFACE"),
        (4, "GDISURFACE"),
    ],
};

const H: Kind = Handle;
const ST: Kind = NtStatus;
const HEX_ELEM: Kind = Hex;
const ALLOCINFO_RET: Kind = Struct(&AllocInfoReturn::DESC);

// ---------------------------------------------------------------- headers

layout!(ExtHeader = "dxgvmb_ext_header", 16 {
    command_offset: u32 => U,
    reserved: u32 => U,
    vgpu_luid: [u32; 2] => Luid,
});

layout!(VmToHostHdr = "dxgkvmb_command_vm_to_host", 24 {
    command_id: u64 => U,
    process: u32 => H,
    channel_type: u32 => Enum(&CHANNEL_TYPE),
    command_type: u32 => Enum(&GLOBAL_COMMANDS),
    _pad0: u32 => Pad,
});

layout!(VgpuToHostHdr = "dxgkvmb_command_vgpu_to_host", 24 {
    command_id: u64 => U,
    process: u32 => H,
    /// channel_type:8 (bits 0–7), async_msg:1 (bit 8), reserved:23
    channel_bits: u32 => Flags(&VGPU_HDR_BITS),
    command_type: u32 => Enum(&ADAPTER_COMMANDS),
    _pad0: u32 => Pad,
});

layout!(HostToVmHdr = "dxgkvmb_command_host_to_vm", 24 {
    command_id: u64 => U,
    process: u32 => H,
    channel_bits: u32 => Flags(&VGPU_HDR_BITS),
    command_type: u32 => Enum(&HOST_TO_GUEST_COMMANDS),
    _pad0: u32 => Pad,
});

const VM: Kind = Struct(&VmToHostHdr::DESC);
const VG: Kind = Struct(&VgpuToHostHdr::DESC);
const HV: Kind = Struct(&HostToVmHdr::DESC);

// ---------------------------------------------------------------- host → guest

layout!(SignalGuestEvent = "dxgkvmb_command_signalguestevent", 48 {
    hdr: HostToVmHdr => HV,
    event: u64 => U,
    process_id: u64 => U,
    dereference_event: u8 => Bool,
    _pad0: [u8; 7] => Pad,
});

layout!(SetGuestData = "dxgkvmb_command_setguestdata", 48 {
    hdr: HostToVmHdr => HV,
    guest_pointer: u64 => Hex,
    /// union { data64; data32 }
    data64: u64 => Hex,
    bits: u32 => Flags(&SETGUESTDATA_BITS),
    _pad0: u32 => Pad,
});

// ---------------------------------------------------------------- global commands

layout!(CreateProcessCmd = "dxgkvmb_command_createprocess", 568 {
    hdr: VmToHostHdr => VM,
    process: u64 => Hex,
    process_id: u64 => U,
    process_name: [u16; 261] => Utf16,
    flags: u8 => Flags(&CREATEPROCESS_FLAGS),
    _pad0: [u8; 5] => Pad,
});
layout!(CreateProcessReturn = "dxgkvmb_command_createprocess_return", 4 { hprocess: u32 => H });
layout!(DestroyProcessCmd = "dxgkvmb_command_destroyprocess", 24 { hdr: VmToHostHdr => VM });
layout!(OpenSyncObjectCmd = "dxgkvmb_command_opensyncobject", 40 {
    hdr: VmToHostHdr => VM,
    device: u32 => H,
    global_sync_object: u32 => H,
    engine_affinity: u32 => Hex,
    flags: u32 => Flags(&SYNCOBJ_FLAGS),
});
layout!(OpenSyncObjectReturn = "dxgkvmb_command_opensyncobject_return", 24 {
    sync_object: u32 => H,
    status: i32 => ST,
    gpu_virtual_address: u64 => Hex,
    guest_cpu_physical_address: u64 => Hex,
});
layout!(CreateNtSharedObjectCmd = "dxgkvmb_command_createntsharedobject", 32 {
    hdr: VmToHostHdr => VM,
    object: u32 => H,
    _pad0: u32 => Pad,
});
layout!(HandleReturn = "d3dkmthandle", 4 { handle: u32 => H });
layout!(DestroyNtSharedObjectCmd = "dxgkvmb_command_destroyntsharedobject", 32 {
    hdr: VmToHostHdr => VM,
    shared_handle: u32 => H,
    _pad0: u32 => Pad,
});
layout!(SetIoSpaceRegionCmd = "dxgkvmb_command_setiospaceregion", 48 {
    hdr: VmToHostHdr => VM,
    start: u64 => Hex,
    length: u64 => Hex,
    shared_page_gpadl: u32 => Hex,
    _pad0: u32 => Pad,
});
layout!(DestroySyncObjectCmd = "dxgkvmb_command_destroysyncobject", 32 {
    hdr: VmToHostHdr => VM,
    sync_object: u32 => H,
    _pad0: u32 => Pad,
});
layout!(ShareObjectWithHostCmd = "dxgkvmb_command_shareobjectwithhost", 40 {
    hdr: VmToHostHdr => VM,
    device_handle: u32 => H,
    object_handle: u32 => H,
    reserved: u64 => U,
});
layout!(ShareObjectWithHostReturn = "dxgkvmb_command_shareobjectwithhost_return", 16 {
    status: i32 => ST,
    alignment: u32 => U,
    vail_nt_handle: u64 => Hex,
});
layout!(IsFeatureEnabledGblCmd = "dxgkvmb_command_isfeatureenabled_gbl", 32 {
    hdr: VmToHostHdr => VM,
    feature_id: u32 => Enum(&FEATURE_ID),
    _pad0: u32 => Pad,
});
layout!(IsFeatureEnabledCmd = "dxgkvmb_command_isfeatureenabled", 32 {
    hdr: VgpuToHostHdr => VG,
    feature_id: u32 => Enum(&FEATURE_ID),
    _pad0: u32 => Pad,
});
layout!(IsFeatureEnabledReturn = "dxgkvmb_command_isfeatureenabled_return", 16 {
    status: i32 => ST,
    /// dxgk_feature_desc {min_supported_version u16, max_supported_version u16, bits u16}
    descriptor: [u16; 3] => Array(&Kind::Hex, 3),
    /// dxgk_isfeatureenabled_result {version u16, value u16}
    result: [u16; 2] => Array(&Kind::Hex, 2),
    _pad0: u16 => Pad,
});

// ---------------------------------------------------------------- adapter commands

layout!(OpenAdapterCmd = "dxgkvmb_command_openadapter", 40 {
    hdr: VgpuToHostHdr => VG,
    vmbus_interface_version: u32 => U,
    vmbus_last_compatible_interface_version: u32 => U,
    guest_adapter_luid: [u32; 2] => Luid,
});
layout!(OpenAdapterReturn = "dxgkvmb_command_openadapter_return", 16 {
    host_adapter_handle: u32 => H,
    status: i32 => ST,
    vmbus_interface_version: u32 => U,
    vmbus_last_compatible_interface_version: u32 => U,
});
layout!(CloseAdapterCmd = "dxgkvmb_command_closeadapter", 32 {
    hdr: VgpuToHostHdr => VG,
    host_handle: u32 => H,
    _pad0: u32 => Pad,
});
layout!(GetInternalAdapterInfoCmd = "dxgkvmb_command_getinternaladapterinfo", 24 {
    hdr: VgpuToHostHdr => VG,
});
layout!(GetInternalAdapterInfoReturn = "dxgkvmb_command_getinternaladapterinfo_return", 712 {
    device_types: u32 => Hex,
    driver_store_copy_mode: u32 => U,
    driver_ddi_version: u32 => Hex,
    flags: u32 => Flags(&ADAPTERINFO_FLAGS),
    host_adapter_luid: [u32; 2] => Luid,
    device_description: [u16; 80] => Utf16,
    device_instance_id: [u16; 260] => Utf16,
    host_vgpu_luid: [u32; 2] => Luid,
});
layout!(QueryAdapterInfoCmd = "dxgkvmb_command_queryadapterinfo", 40 {
    hdr: VgpuToHostHdr => VG,
    query_type: u32 => Enum(&QAI_TYPE),
    private_data_size: u32 => U,
    /// u8 private_data[1]: the tail starts here
    private_data: [u8; 8] => Bytes,
});
layout!(QueryAdapterInfoReturn = "dxgkvmb_command_queryadapterinfo_return", 8 {
    status: i32 => ST,
    private_data: [u8; 4] => Bytes,
});
layout!(CreateDeviceCmd = "dxgkvmb_command_createdevice", 40 {
    hdr: VgpuToHostHdr => VG,
    flags: u32 => Flags(&CREATEDEVICE_FLAGS),
    cdd_device: u8 => Bool,
    _pad0: [u8; 3] => Pad,
    error_code: u64 => Hex,
});
layout!(CreateDeviceReturn = "dxgkvmb_command_createdevice_return", 4 { device: u32 => H });
layout!(DestroyDeviceCmd = "dxgkvmb_command_destroydevice", 32 {
    hdr: VgpuToHostHdr => VG,
    device: u32 => H,
    _pad0: u32 => Pad,
});
layout!(FlushDeviceCmd = "dxgkvmb_command_flushdevice", 32 {
    hdr: VgpuToHostHdr => VG,
    device: u32 => H,
    reason: u32 => Enum(&FLUSH_REASON),
});
layout!(CreateContextVirtualCmd = "dxgkvmb_command_createcontextvirtual", 56 {
    hdr: VgpuToHostHdr => VG,
    context: u32 => H,
    device: u32 => H,
    node_ordinal: u32 => U,
    engine_affinity: u32 => Hex,
    flags: u32 => Flags(&CREATECONTEXT_FLAGS),
    client_hint: u32 => Enum(&super::types::CLIENT_HINT),
    priv_drv_data_size: u32 => U,
    /// u8 priv_drv_data[1]: the tail starts here
    priv_drv_data: [u8; 4] => Bytes,
});
layout!(DestroyContextCmd = "dxgkvmb_command_destroycontext", 32 {
    hdr: VgpuToHostHdr => VG,
    context: u32 => H,
    _pad0: u32 => Pad,
});
layout!(CreateAllocationCmd = "dxgkvmb_command_createallocation", 64 {
    hdr: VgpuToHostHdr => VG,
    device: u32 => H,
    resource: u32 => H,
    private_runtime_data_size: u32 => U,
    priv_drv_data_size: u32 => U,
    alloc_count: u32 => U,
    flags: u32 => Flags(&CREATEALLOC_FLAGS),
    private_runtime_resource_handle: u64 => Hex,
    make_resident: u8 => Bool,
    _pad0: [u8; 7] => Pad,
});
layout!(CreateAllocationAllocInfo = "dxgkvmb_command_createallocation_allocinfo", 12 {
    flags: u32 => Hex,
    priv_drv_data_size: u32 => U,
    vidpn_source_id: u32 => U,
});
layout!(DescribeAllocation = "dxgkarg_describeallocation", 48 {
    allocation: u64 => Hex,
    width: u32 => U,
    height: u32 => U,
    format: u32 => U,
    multisample_method: u32 => U,
    refresh_rate: [u32; 2] => Array(&Kind::U, 2),
    private_driver_attribute: u32 => Hex,
    flags: u32 => Hex,
    rotation: u32 => U,
    _pad0: u32 => Pad,
});
layout!(AllocInfoReturn = "dxgkvmb_command_allocinfo_return", 72 {
    allocation: u32 => H,
    priv_drv_data_size: u32 => U,
    allocation_flags: u32 => Flags(&ALLOC_VMB_FLAGS),
    _pad0: u32 => Pad,
    allocation_size: u64 => Hex,
    driver_info: DescribeAllocation => Struct(&DescribeAllocation::DESC),
});
layout!(CreateAllocationReturn = "dxgkvmb_command_createallocation_return", 88 {
    flags: u32 => Flags(&CREATEALLOC_FLAGS),
    resource: u32 => H,
    global_share: u32 => H,
    vgpu_flags: u32 => Hex,
    /// allocation_info[1]: alloc_count elements follow
    allocation_info: [AllocInfoReturn; 1] => Array(&ALLOCINFO_RET, 1),
});
layout!(DestroyAllocationCmd = "dxgkvmb_command_destroyallocation", 48 {
    hdr: VgpuToHostHdr => VG,
    device: u32 => H,
    resource: u32 => H,
    alloc_count: u32 => U,
    flags: u32 => Flags(&DESTROYALLOC_FLAGS),
    allocations: [u32; 1] => Array(&Kind::Handle, 1),
    _pad0: u32 => Pad,
});
layout!(SetExistingSysmemStoreCmd = "dxgkvmb_command_setexistingsysmemstore", 40 {
    hdr: VgpuToHostHdr => VG,
    device: u32 => H,
    allocation: u32 => H,
    gpadl: u32 => Hex,
    _pad0: u32 => Pad,
});
layout!(SetExistingSysmemPagesCmd = "dxgkvmb_command_setexistingsysmempages", 40 {
    hdr: VgpuToHostHdr => VG,
    device: u32 => H,
    allocation: u32 => H,
    num_pages: u32 => U,
    alloc_offset_in_pages: u32 => U,
});
layout!(CreatePagingQueueCmd = "dxgkvmb_command_createpagingqueue", 56 {
    hdr: VgpuToHostHdr => VG,
    args: CreatePagingQueue => Struct(&CreatePagingQueue::DESC),
});
layout!(CreatePagingQueueReturn = "dxgkvmb_command_createpagingqueue_return", 24 {
    paging_queue: u32 => H,
    sync_object: u32 => H,
    fence_storage_physical_address: u64 => Hex,
    fence_storage_offset: u64 => Hex,
});
layout!(DestroyPagingQueueCmd = "dxgkvmb_command_destroypagingqueue", 32 {
    hdr: VgpuToHostHdr => VG,
    paging_queue: u32 => H,
    _pad0: u32 => Pad,
});
layout!(CreateSyncObjectCmd = "dxgkvmb_command_createsyncobject", 128 {
    hdr: VgpuToHostHdr => VG,
    args: CreateSyncObject2 => Struct(&CreateSyncObject2::DESC),
    client_hint: u32 => U,
    _pad0: u32 => Pad,
});
layout!(CreateSyncObjectReturn = "dxgkvmb_command_createsyncobject_return", 32 {
    sync_object: u32 => H,
    global_sync_object: u32 => H,
    fence_gpu_va: u64 => Hex,
    fence_storage_address: u64 => Hex,
    fence_storage_offset: u32 => Hex,
    _pad0: u32 => Pad,
});
layout!(SignalSyncObjectCmd = "dxgkvmb_command_signalsyncobject", 56 {
    hdr: VgpuToHostHdr => VG,
    object_count: u32 => U,
    flags: u32 => Flags(&SIGNAL_FLAGS),
    context_count: u32 => U,
    _pad0: u32 => Pad,
    fence_value: u64 => U,
    /// union { cpu_event_handle (host-event id); device }
    cpu_event_handle: u64 => Hex,
});
layout!(WaitSyncObjectFromCpuCmd = "dxgkvmb_command_waitforsyncobjectfromcpu", 56 {
    hdr: VgpuToHostHdr => VG,
    device: u32 => H,
    object_count: u32 => U,
    flags: u32 => Flags(&WAITCPU_FLAGS),
    _pad0: u32 => Pad,
    guest_event_pointer: u64 => U,
    dereference_event: u8 => Bool,
    _pad1: [u8; 7] => Pad,
});
layout!(WaitSyncObjectFromGpuCmd = "dxgkvmb_command_waitforsyncobjectfromgpu", 48 {
    hdr: VgpuToHostHdr => VG,
    context: u32 => H,
    object_count: u32 => U,
    legacy_fence_object: u8 => Bool,
    _pad0: [u8; 7] => Pad,
    /// u64 fence_values[object_count] @40, then handles[object_count]: 40 + 12n bytes total
    fence_values: [u64; 1] => Array(&HEX_ELEM, 1),
});
layout!(MakeResidentCmd = "dxgkvmb_command_makeresident", 48 {
    hdr: VgpuToHostHdr => VG,
    device: u32 => H,
    paging_queue: u32 => H,
    flags: u32 => Flags(&MAKERESIDENT_FLAGS),
    alloc_count: u32 => U,
    allocations: [u32; 1] => Array(&Kind::Handle, 1),
    _pad0: u32 => Pad,
});
layout!(MakeResidentReturn = "dxgkvmb_command_makeresident_return", 24 {
    paging_fence_value: u64 => U,
    num_bytes_to_trim: u64 => U,
    status: i32 => ST,
    _pad0: u32 => Pad,
});
layout!(EvictCmd = "dxgkvmb_command_evict", 40 {
    hdr: VgpuToHostHdr => VG,
    device: u32 => H,
    flags: u32 => Flags(&EVICT_FLAGS),
    alloc_count: u32 => U,
    allocations: [u32; 1] => Array(&Kind::Handle, 1),
});
layout!(EvictReturn = "dxgkvmb_command_evict_return", 8 { num_bytes_to_trim: u64 => U });
layout!(SubmitCommandCmd = "dxgkvmb_command_submitcommand", 408 {
    hdr: VgpuToHostHdr => VG,
    args: SubmitCommand => Struct(&SubmitCommand::DESC),
});
layout!(SubmitCommandToHwQueueCmd = "dxgkvmb_command_submitcommandtohwqueue", 80 {
    hdr: VgpuToHostHdr => VG,
    args: SubmitCommandToHwQueue => Struct(&SubmitCommandToHwQueue::DESC),
});
layout!(MapGpuVaCmd = "dxgkvmb_command_mapgpuvirtualaddress", 136 {
    hdr: VgpuToHostHdr => VG,
    args: MapGpuVa => Struct(&MapGpuVa::DESC),
    device: u32 => H,
    _pad0: u32 => Pad,
});
layout!(MapGpuVaReturn = "dxgkvmb_command_mapgpuvirtualaddress_return", 24 {
    virtual_address: u64 => Hex,
    paging_fence_value: u64 => U,
    status: i32 => ST,
    _pad0: u32 => Pad,
});
layout!(ReserveGpuVaCmd = "dxgkvmb_command_reservegpuvirtualaddress", 96 {
    hdr: VgpuToHostHdr => VG,
    args: ReserveGpuVa => Struct(&ReserveGpuVa::DESC),
});
layout!(ReserveGpuVaReturn = "dxgkvmb_command_reservegpuvirtualaddress_return", 16 {
    virtual_address: u64 => Hex,
    paging_fence_value: u64 => U,
});
layout!(FreeGpuVaCmd = "dxgkvmb_command_freegpuvirtualaddress", 48 {
    hdr: VgpuToHostHdr => VG,
    args: FreeGpuVa => Struct(&FreeGpuVa::DESC),
});
layout!(UpdateGpuVaCmd = "dxgkvmb_command_updategpuvirtualaddress", 120 {
    hdr: VgpuToHostHdr => VG,
    fence_value: u64 => U,
    device: u32 => H,
    context: u32 => H,
    fence_object: u32 => H,
    num_operations: u32 => U,
    flags: u32 => Hex,
    _pad0: u32 => Pad,
    operations: [UpdateGpuVaOperation; 1] => Array(&Struct(&UpdateGpuVaOperation::DESC), 1),
});
layout!(Lock2Cmd = "dxgkvmb_command_lock2", 64 {
    hdr: VgpuToHostHdr => VG,
    args: Lock2 => Struct(&Lock2::DESC),
    use_legacy_lock: u8 => Bool,
    _pad0: [u8; 3] => Pad,
    flags: u32 => Hex,
    priv_drv_data: u32 => Hex,
    _pad1: u32 => Pad,
});
layout!(Lock2Return = "dxgkvmb_command_lock2_return", 16 {
    status: i32 => ST,
    _pad0: u32 => Pad,
    cpu_visible_buffer_offset: u64 => Hex,
});
layout!(Unlock2Cmd = "dxgkvmb_command_unlock2", 40 {
    hdr: VgpuToHostHdr => VG,
    args: Unlock2 => Struct(&Unlock2::DESC),
    use_legacy_unlock: u8 => Bool,
    _pad0: [u8; 7] => Pad,
});
layout!(UpdateAllocPropertyCmd = "dxgkvmb_command_updateallocationproperty", 64 {
    hdr: VgpuToHostHdr => VG,
    args: UpdateAllocProperty => Struct(&UpdateAllocProperty::DESC),
});
layout!(UpdateAllocPropertyReturn = "dxgkvmb_command_updateallocationproperty_return", 16 {
    paging_fence_value: u64 => U,
    status: i32 => ST,
    _pad0: u32 => Pad,
});
layout!(MarkDeviceAsErrorCmd = "dxgkvmb_command_markdeviceaserror", 32 {
    hdr: VgpuToHostHdr => VG,
    args: MarkDeviceAsError => Struct(&MarkDeviceAsError::DESC),
});
layout!(OfferAllocationsCmd = "dxgkvmb_command_offerallocations", 48 {
    hdr: VgpuToHostHdr => VG,
    device: u32 => H,
    allocation_count: u32 => U,
    priority: u32 => Enum(&OFFER_PRIORITY),
    flags: u32 => Flags(&OFFER_FLAGS),
    resources: u8 => Bool,
    _pad0: [u8; 3] => Pad,
    allocations: [u32; 1] => Array(&Kind::Handle, 1),
});
layout!(ReclaimAllocationsCmd = "dxgkvmb_command_reclaimallocations", 48 {
    hdr: VgpuToHostHdr => VG,
    device: u32 => H,
    paging_queue: u32 => H,
    allocation_count: u32 => U,
    resources: u8 => Bool,
    write_results: u8 => Bool,
    _pad0: [u8; 2] => Pad,
    allocations: [u32; 1] => Array(&Kind::Handle, 1),
    _pad1: u32 => Pad,
});
layout!(ReclaimAllocationsReturn = "dxgkvmb_command_reclaimallocations_return", 16 {
    paging_fence_value: u64 => U,
    status: i32 => ST,
    discarded: [u32; 1] => Array(&Kind::U, 1),
});
layout!(ChangeVidMemReservationCmd = "dxgkvmb_command_changevideomemoryreservation", 56 {
    hdr: VgpuToHostHdr => VG,
    args: ChangeVidMemReservation => Struct(&ChangeVidMemReservation::DESC),
});
layout!(CreateHwQueueCmd = "dxgkvmb_command_createhwqueue", 72 {
    hdr: VgpuToHostHdr => VG,
    status: i32 => ST,
    hwqueue: u32 => H,
    hwqueue_progress_fence: u32 => H,
    _pad0: u32 => Pad,
    hwqueue_progress_fence_cpuva: u64 => Hex,
    hwqueue_progress_fence_gpuva: u64 => Hex,
    context: u32 => H,
    flags: u32 => Flags(&CREATEHWQUEUE_FLAGS),
    priv_drv_data_size: u32 => U,
    /// char priv_drv_data[1]: the tail starts here
    priv_drv_data: [u8; 4] => Bytes,
});
layout!(DestroyHwQueueCmd = "dxgkvmb_command_destroyhwqueue", 32 {
    hdr: VgpuToHostHdr => VG,
    hwqueue: u32 => H,
    _pad0: u32 => Pad,
});
layout!(QueryAllocationResidencyCmd = "dxgkvmb_command_queryallocationresidency", 56 {
    hdr: VgpuToHostHdr => VG,
    args: QueryAllocationResidency => Struct(&QueryAllocationResidency::DESC),
});
layout!(StatusReturn = "ntstatus", 4 { status: i32 => ST });
layout!(QueryAllocationResidencyReturn = "dxgkvmb_command_queryallocationresidency_return", 4 {
    /// followed by u32 residency[count or 1]
    status: i32 => ST,
});
layout!(GetAllocationPriorityReturn = "dxgkvmb_command_getallocationpriority_return", 4 {
    /// followed by u32 priorities[count or 1]
    status: i32 => ST,
});
layout!(EscapeCmd = "dxgkvmb_command_escape", 56 {
    hdr: VgpuToHostHdr => VG,
    adapter: u32 => H,
    device: u32 => H,
    type_ as "type": u32 => Enum(&ESCAPE_TYPE),
    flags: u32 => Flags(&ESCAPE_FLAGS),
    priv_drv_data_size: u32 => U,
    context: u32 => H,
    /// u8 priv_drv_data[1]: the tail starts here
    priv_drv_data: [u8; 8] => Bytes,
});
layout!(QueryVideoMemoryInfoCmd = "dxgkvmb_command_queryvideomemoryinfo", 40 {
    hdr: VgpuToHostHdr => VG,
    adapter: u32 => H,
    memory_segment_group: u32 => Enum(&MEMORY_SEGMENT_GROUP),
    physical_adapter_index: u32 => U,
    _pad0: u32 => Pad,
});
layout!(QueryVideoMemoryInfoReturn = "dxgkvmb_command_queryvideomemoryinfo_return", 32 {
    budget: u64 => U,
    current_usage: u64 => U,
    current_reservation: u64 => U,
    available_for_reservation: u64 => U,
});
layout!(GetDeviceStateCmd = "dxgkvmb_command_getdevicestate", 80 {
    hdr: VgpuToHostHdr => VG,
    args: GetDeviceState => Struct(&GetDeviceState::DESC),
});
layout!(GetDeviceStateReturn = "dxgkvmb_command_getdevicestate_return", 64 {
    args: GetDeviceState => Struct(&GetDeviceState::DESC),
    status: i32 => ST,
    _pad0: u32 => Pad,
});
layout!(QueryClockCalibrationCmd = "dxgkvmb_command_queryclockcalibration", 64 {
    hdr: VgpuToHostHdr => VG,
    args: QueryClockCalibration => Struct(&QueryClockCalibration::DESC),
});
layout!(QueryClockCalibrationReturn = "dxgkvmb_command_queryclockcalibration_return", 32 {
    status: i32 => ST,
    clock_data: super::types::GpuClockData => Struct(&super::types::GpuClockData::DESC),
});
layout!(QueryStatisticsCmd = "dxgkvmb_command_querystatistics", 832 {
    hdr: VgpuToHostHdr => VG,
    args: QueryStatistics => Struct(&QueryStatistics::DESC),
});
layout!(QueryStatisticsReturn = "dxgkvmb_command_querystatistics_return", 784 {
    status: i32 => ST,
    reserved: u32 => U,
    result: [u8; 776] => Bytes,
});
layout!(GetStandardAllocPrivDataCmd = "dxgkvmb_command_getstandardallocprivdata", 64 {
    hdr: VgpuToHostHdr => VG,
    alloc_type: u32 => Enum(&STDALLOC_TYPE),
    priv_driver_data_size: u32 => U,
    priv_driver_resource_size: u32 => U,
    physical_adapter_index: u32 => U,
    /// union of surface descriptions; gdi_surface {width, height, format, type, flags, pitch}
    gdi_surface: [u32; 6] => Array(&Kind::U, 6),
});
layout!(GetStandardAllocPrivDataReturn = "dxgkvmb_command_getstandardallocprivdata_return", 36 {
    status: i32 => ST,
    priv_driver_data_size: u32 => U,
    priv_driver_resource_size: u32 => U,
    gdi_surface: [u32; 6] => Array(&Kind::U, 6),
});
layout!(SetAllocationPriorityCmd = "dxgkvmb_command_setallocationpriority", 40 {
    hdr: VgpuToHostHdr => VG,
    device: u32 => H,
    resource: u32 => H,
    allocation_count: u32 => U,
    _pad0: u32 => Pad,
});
layout!(GetAllocationPriorityCmd = "dxgkvmb_command_getallocationpriority", 40 {
    hdr: VgpuToHostHdr => VG,
    device: u32 => H,
    resource: u32 => H,
    allocation_count: u32 => U,
    _pad0: u32 => Pad,
});
layout!(SetContextSchedulingPriority2Cmd = "dxgkvmb_command_setcontextschedulingpriority2", 40 {
    hdr: VgpuToHostHdr => VG,
    context: u32 => H,
    priority: i32 => I,
    in_process: u8 => Bool,
    _pad0: [u8; 7] => Pad,
});
layout!(GetContextSchedulingPriorityCmd = "dxgkvmb_command_getcontextschedulingpriority", 32 {
    hdr: VgpuToHostHdr => VG,
    context: u32 => H,
    in_process: u8 => Bool,
    _pad0: [u8; 3] => Pad,
});
layout!(GetContextSchedulingPriorityReturn = "dxgkvmb_command_getcontextschedulingpriority_return", 8 {
    status: i32 => ST,
    priority: i32 => I,
});
layout!(FlushHeapTransitionsCmd = "dxgkvmb_command_flushheaptransitions", 24 {
    hdr: VgpuToHostHdr => VG,
});
layout!(InvalidateCacheCmd = "dxgkvmb_command_invalidatecache", 56 {
    hdr: VgpuToHostHdr => VG,
    device: u32 => H,
    allocation: u32 => H,
    offset: u64 => Hex,
    length: u64 => Hex,
    reserved: u64 => U,
});
layout!(OpenResourceCmd = "dxgkvmb_command_openresource", 48 {
    hdr: VgpuToHostHdr => VG,
    device: u32 => H,
    nt_security_sharing: u8 => Bool,
    _pad0: [u8; 3] => Pad,
    global_share: u32 => H,
    allocation_count: u32 => U,
    total_priv_drv_data_size: u32 => U,
    _pad1: u32 => Pad,
});
layout!(OpenResourceReturn = "dxgkvmb_command_openresource_return", 8 {
    resource: u32 => H,
    status: i32 => ST,
});

/// What the guest expects back for a command.
#[derive(Debug, Clone, Copy)]
pub enum ReplyLayout {
    /// A bare 4-byte NTSTATUS.
    NtStatus,
    /// A typed struct (possibly followed by variable data).
    Struct(&'static StructDesc),
    /// The request struct itself, modified by the host (without the ext header).
    Echo,
    /// Opaque bytes (ESCAPE: the private data only; QUERYADAPTERINFO before v40).
    Bytes,
    /// Empty completion (CLOSEADAPTER, DESTROYPAGINGQUEUE).
    Empty,
    /// Sent async: no reply (SUBMIT*, SIGNAL, WAIT-GPU when async_msg_enabled); otherwise
    /// NTSTATUS.
    NtStatusOrAsync,
}

/// One VMBus command the driver sends or receives.
#[derive(Debug)]
pub struct VmbusCmdDesc {
    /// Identity.
    pub cmd: VmbusCmd,
    /// Request layout (starts with the 24-byte command header).
    pub request: &'static StructDesc,
    /// Reply.
    pub reply: ReplyLayout,
    /// Variable tail of the request, free text.
    pub tail: &'static str,
}

const fn g(v: u32) -> VmbusCmd {
    VmbusCmd {
        channel: VmbusChannel::Global,
        value: v,
    }
}
const fn a(v: u32) -> VmbusCmd {
    VmbusCmd {
        channel: VmbusChannel::Adapter,
        value: v,
    }
}
const fn h(v: u32) -> VmbusCmd {
    VmbusCmd {
        channel: VmbusChannel::HostToGuest,
        value: v,
    }
}

/// Global-channel command by value.
pub const fn global(v: u32) -> VmbusCmd {
    g(v)
}
/// Per-adapter command by value.
pub const fn adapter(v: u32) -> VmbusCmd {
    a(v)
}

use ReplyLayout as R;

/// Every command the guest driver sends (and the host→guest commands it handles).
pub const COMMANDS: &[VmbusCmdDesc] = &[
    VmbusCmdDesc {
        cmd: g(1000),
        request: &CreateProcessCmd::DESC,
        reply: R::Struct(&CreateProcessReturn::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: g(1001),
        request: &DestroyProcessCmd::DESC,
        reply: R::NtStatus,
        tail: "",
    },
    VmbusCmdDesc {
        cmd: g(1002),
        request: &OpenSyncObjectCmd::DESC,
        reply: R::Struct(&OpenSyncObjectReturn::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: g(1003),
        request: &DestroySyncObjectCmd::DESC,
        reply: R::NtStatus,
        tail: "",
    },
    VmbusCmdDesc {
        cmd: g(1004),
        request: &CreateNtSharedObjectCmd::DESC,
        reply: R::Struct(&HandleReturn::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: g(1005),
        request: &DestroyNtSharedObjectCmd::DESC,
        reply: R::NtStatus,
        tail: "",
    },
    VmbusCmdDesc {
        cmd: g(1010),
        request: &SetIoSpaceRegionCmd::DESC,
        reply: R::NtStatus,
        tail: "",
    },
    VmbusCmdDesc {
        cmd: g(1021),
        request: &ShareObjectWithHostCmd::DESC,
        reply: R::Struct(&ShareObjectWithHostReturn::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: g(1022),
        request: &IsFeatureEnabledGblCmd::DESC,
        reply: R::Struct(&IsFeatureEnabledReturn::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(0),
        request: &CreateDeviceCmd::DESC,
        reply: R::Struct(&CreateDeviceReturn::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(1),
        request: &DestroyDeviceCmd::DESC,
        reply: R::NtStatus,
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(2),
        request: &QueryAdapterInfoCmd::DESC,
        reply: R::Struct(&QueryAdapterInfoReturn::DESC),
        tail: "private_data[private_data_size] from offset 32",
    },
    VmbusCmdDesc {
        cmd: a(4),
        request: &CreateAllocationCmd::DESC,
        reply: R::Struct(&CreateAllocationReturn::DESC),
        tail: "allocinfo[alloc_count] (12 each), private runtime data, standard-alloc struct or priv_drv_data, each allocation's priv_drv_data",
    },
    VmbusCmdDesc {
        cmd: a(5),
        request: &DestroyAllocationCmd::DESC,
        reply: R::NtStatus,
        tail: "allocations[alloc_count] from offset 40",
    },
    VmbusCmdDesc {
        cmd: a(6),
        request: &CreateContextVirtualCmd::DESC,
        reply: R::Echo,
        tail: "priv_drv_data[priv_drv_data_size] from offset 52",
    },
    VmbusCmdDesc {
        cmd: a(7),
        request: &DestroyContextCmd::DESC,
        reply: R::NtStatus,
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(8),
        request: &CreateSyncObjectCmd::DESC,
        reply: R::Struct(&CreateSyncObjectReturn::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(9),
        request: &CreatePagingQueueCmd::DESC,
        reply: R::Struct(&CreatePagingQueueReturn::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(10),
        request: &DestroyPagingQueueCmd::DESC,
        reply: R::Empty,
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(11),
        request: &MakeResidentCmd::DESC,
        reply: R::Struct(&MakeResidentReturn::DESC),
        tail: "allocations[alloc_count] from offset 40",
    },
    VmbusCmdDesc {
        cmd: a(12),
        request: &EvictCmd::DESC,
        reply: R::Struct(&EvictReturn::DESC),
        tail: "allocations[alloc_count] from offset 36",
    },
    VmbusCmdDesc {
        cmd: a(13),
        request: &EscapeCmd::DESC,
        reply: R::Bytes,
        tail: "priv_drv_data[priv_drv_data_size] from offset 48",
    },
    VmbusCmdDesc {
        cmd: a(14),
        request: &OpenAdapterCmd::DESC,
        reply: R::Struct(&OpenAdapterReturn::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(15),
        request: &CloseAdapterCmd::DESC,
        reply: R::Empty,
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(16),
        request: &FreeGpuVaCmd::DESC,
        reply: R::NtStatus,
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(17),
        request: &MapGpuVaCmd::DESC,
        reply: R::Struct(&MapGpuVaReturn::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(18),
        request: &ReserveGpuVaCmd::DESC,
        reply: R::Struct(&ReserveGpuVaReturn::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(19),
        request: &UpdateGpuVaCmd::DESC,
        reply: R::NtStatus,
        tail: "operations[num_operations] (64 each) from offset 56",
    },
    VmbusCmdDesc {
        cmd: a(20),
        request: &SubmitCommandCmd::DESC,
        reply: R::NtStatusOrAsync,
        tail: "history buffer handles, priv_drv_data",
    },
    VmbusCmdDesc {
        cmd: a(21),
        request: &QueryVideoMemoryInfoCmd::DESC,
        reply: R::Struct(&QueryVideoMemoryInfoReturn::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(22),
        request: &WaitSyncObjectFromCpuCmd::DESC,
        reply: R::NtStatus,
        tail: "objects[object_count], u64 fences[object_count]",
    },
    VmbusCmdDesc {
        cmd: a(23),
        request: &Lock2Cmd::DESC,
        reply: R::Struct(&Lock2Return::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(24),
        request: &Unlock2Cmd::DESC,
        reply: R::NtStatus,
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(25),
        request: &WaitSyncObjectFromGpuCmd::DESC,
        reply: R::NtStatusOrAsync,
        tail: "u64 fence_values[n] @40 then handles[n]: 40 + 12n bytes",
    },
    VmbusCmdDesc {
        cmd: a(26),
        request: &SignalSyncObjectCmd::DESC,
        reply: R::NtStatusOrAsync,
        tail: "objects[object_count], [context], contexts[], fences[]",
    },
    VmbusCmdDesc {
        cmd: a(28),
        request: &GetDeviceStateCmd::DESC,
        reply: R::Struct(&GetDeviceStateReturn::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(29),
        request: &MarkDeviceAsErrorCmd::DESC,
        reply: R::NtStatus,
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(32),
        request: &OpenResourceCmd::DESC,
        reply: R::Struct(&OpenResourceReturn::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(33),
        request: &SetContextSchedulingPriority2Cmd::DESC,
        reply: R::NtStatus,
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(36),
        request: &GetInternalAdapterInfoCmd::DESC,
        reply: R::Struct(&GetInternalAdapterInfoReturn::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(37),
        request: &FlushHeapTransitionsCmd::DESC,
        reply: R::NtStatus,
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(39),
        request: &GetStandardAllocPrivDataCmd::DESC,
        reply: R::Struct(&GetStandardAllocPrivDataReturn::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(41),
        request: &QueryAllocationResidencyCmd::DESC,
        reply: R::NtStatus,
        tail: "allocations[]; reply: status + u32 residency[count or 1]",
    },
    VmbusCmdDesc {
        cmd: a(42),
        request: &FlushDeviceCmd::DESC,
        reply: R::NtStatus,
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(45),
        request: &SetExistingSysmemStoreCmd::DESC,
        reply: R::NtStatus,
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(48),
        request: &QueryStatisticsCmd::DESC,
        reply: R::Struct(&QueryStatisticsReturn::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(49),
        request: &ChangeVidMemReservationCmd::DESC,
        reply: R::NtStatus,
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(50),
        request: &CreateHwQueueCmd::DESC,
        reply: R::Echo,
        tail: "priv_drv_data[priv_drv_data_size] from offset 68",
    },
    VmbusCmdDesc {
        cmd: a(51),
        request: &DestroyHwQueueCmd::DESC,
        reply: R::NtStatus,
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(52),
        request: &SubmitCommandToHwQueueCmd::DESC,
        reply: R::NtStatusOrAsync,
        tail: "written_primaries[], priv_drv_data",
    },
    VmbusCmdDesc {
        cmd: a(56),
        request: &UpdateAllocPropertyCmd::DESC,
        reply: R::Struct(&UpdateAllocPropertyReturn::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(57),
        request: &OfferAllocationsCmd::DESC,
        reply: R::NtStatus,
        tail: "allocations[allocation_count] from offset 44",
    },
    VmbusCmdDesc {
        cmd: a(58),
        request: &ReclaimAllocationsCmd::DESC,
        reply: R::Struct(&ReclaimAllocationsReturn::DESC),
        tail: "allocations[allocation_count] from offset 40",
    },
    VmbusCmdDesc {
        cmd: a(59),
        request: &SetAllocationPriorityCmd::DESC,
        reply: R::NtStatus,
        tail: "allocations[count or 0], u32 priorities[count or 1]",
    },
    VmbusCmdDesc {
        cmd: a(60),
        request: &GetAllocationPriorityCmd::DESC,
        reply: R::NtStatus,
        tail: "allocations[count or 0]; reply: status + priorities[count or 1]",
    },
    VmbusCmdDesc {
        cmd: a(61),
        request: &GetContextSchedulingPriorityCmd::DESC,
        reply: R::Struct(&GetContextSchedulingPriorityReturn::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(62),
        request: &QueryClockCalibrationCmd::DESC,
        reply: R::Struct(&QueryClockCalibrationReturn::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(66),
        request: &SetExistingSysmemPagesCmd::DESC,
        reply: R::NtStatus,
        tail: "u64 pfn[num_pages] from offset 40",
    },
    VmbusCmdDesc {
        cmd: a(67),
        request: &InvalidateCacheCmd::DESC,
        reply: R::NtStatus,
        tail: "",
    },
    VmbusCmdDesc {
        cmd: a(68),
        request: &IsFeatureEnabledCmd::DESC,
        reply: R::Struct(&IsFeatureEnabledReturn::DESC),
        tail: "",
    },
    VmbusCmdDesc {
        cmd: h(0),
        request: &SignalGuestEvent::DESC,
        reply: R::Empty,
        tail: "",
    },
    VmbusCmdDesc {
        cmd: h(2),
        request: &SetGuestData::DESC,
        reply: R::Empty,
        tail: "",
    },
    VmbusCmdDesc {
        cmd: h(3),
        request: &SignalGuestEvent::DESC,
        reply: R::Empty,
        tail: "",
    },
];

/// Every VMBus struct (headers, requests, replies), for the schema's `structs` list.
pub const STRUCTS: &[&StructDesc] = &[
    &ExtHeader::DESC,
    &VmToHostHdr::DESC,
    &VgpuToHostHdr::DESC,
    &HostToVmHdr::DESC,
    &SignalGuestEvent::DESC,
    &SetGuestData::DESC,
    &CreateProcessCmd::DESC,
    &CreateProcessReturn::DESC,
    &DestroyProcessCmd::DESC,
    &OpenSyncObjectCmd::DESC,
    &OpenSyncObjectReturn::DESC,
    &CreateNtSharedObjectCmd::DESC,
    &DestroyNtSharedObjectCmd::DESC,
    &SetIoSpaceRegionCmd::DESC,
    &DestroySyncObjectCmd::DESC,
    &ShareObjectWithHostCmd::DESC,
    &ShareObjectWithHostReturn::DESC,
    &IsFeatureEnabledGblCmd::DESC,
    &IsFeatureEnabledCmd::DESC,
    &IsFeatureEnabledReturn::DESC,
    &OpenAdapterCmd::DESC,
    &OpenAdapterReturn::DESC,
    &CloseAdapterCmd::DESC,
    &GetInternalAdapterInfoCmd::DESC,
    &GetInternalAdapterInfoReturn::DESC,
    &QueryAdapterInfoCmd::DESC,
    &QueryAdapterInfoReturn::DESC,
    &CreateDeviceCmd::DESC,
    &CreateDeviceReturn::DESC,
    &DestroyDeviceCmd::DESC,
    &FlushDeviceCmd::DESC,
    &CreateContextVirtualCmd::DESC,
    &DestroyContextCmd::DESC,
    &CreateAllocationCmd::DESC,
    &CreateAllocationAllocInfo::DESC,
    &CreateAllocationReturn::DESC,
    &AllocInfoReturn::DESC,
    &DescribeAllocation::DESC,
    &DestroyAllocationCmd::DESC,
    &SetExistingSysmemStoreCmd::DESC,
    &SetExistingSysmemPagesCmd::DESC,
    &CreatePagingQueueCmd::DESC,
    &CreatePagingQueueReturn::DESC,
    &DestroyPagingQueueCmd::DESC,
    &CreateSyncObjectCmd::DESC,
    &CreateSyncObjectReturn::DESC,
    &SignalSyncObjectCmd::DESC,
    &WaitSyncObjectFromCpuCmd::DESC,
    &WaitSyncObjectFromGpuCmd::DESC,
    &MakeResidentCmd::DESC,
    &MakeResidentReturn::DESC,
    &EvictCmd::DESC,
    &EvictReturn::DESC,
    &SubmitCommandCmd::DESC,
    &SubmitCommandToHwQueueCmd::DESC,
    &MapGpuVaCmd::DESC,
    &MapGpuVaReturn::DESC,
    &ReserveGpuVaCmd::DESC,
    &ReserveGpuVaReturn::DESC,
    &FreeGpuVaCmd::DESC,
    &UpdateGpuVaCmd::DESC,
    &Lock2Cmd::DESC,
    &Lock2Return::DESC,
    &Unlock2Cmd::DESC,
    &UpdateAllocPropertyCmd::DESC,
    &UpdateAllocPropertyReturn::DESC,
    &MarkDeviceAsErrorCmd::DESC,
    &OfferAllocationsCmd::DESC,
    &ReclaimAllocationsCmd::DESC,
    &ReclaimAllocationsReturn::DESC,
    &ChangeVidMemReservationCmd::DESC,
    &CreateHwQueueCmd::DESC,
    &DestroyHwQueueCmd::DESC,
    &QueryAllocationResidencyCmd::DESC,
    &EscapeCmd::DESC,
    &QueryVideoMemoryInfoCmd::DESC,
    &QueryVideoMemoryInfoReturn::DESC,
    &GetDeviceStateCmd::DESC,
    &GetDeviceStateReturn::DESC,
    &QueryClockCalibrationCmd::DESC,
    &QueryClockCalibrationReturn::DESC,
    &QueryStatisticsCmd::DESC,
    &QueryStatisticsReturn::DESC,
    &GetStandardAllocPrivDataCmd::DESC,
    &GetStandardAllocPrivDataReturn::DESC,
    &SetAllocationPriorityCmd::DESC,
    &GetAllocationPriorityCmd::DESC,
    &SetContextSchedulingPriority2Cmd::DESC,
    &GetContextSchedulingPriorityCmd::DESC,
    &GetContextSchedulingPriorityReturn::DESC,
    &FlushHeapTransitionsCmd::DESC,
    &InvalidateCacheCmd::DESC,
    &OpenResourceCmd::DESC,
    &OpenResourceReturn::DESC,
    &StatusReturn::DESC,
    &HandleReturn::DESC,
    &QueryAllocationResidencyReturn::DESC,
    &GetAllocationPriorityReturn::DESC,
];

/// Enum family of a command.
pub fn enum_of(ch: VmbusChannel) -> &'static EnumDesc {
    match ch {
        VmbusChannel::Global => &GLOBAL_COMMANDS,
        VmbusChannel::Adapter => &ADAPTER_COMMANDS,
        VmbusChannel::HostToGuest => &HOST_TO_GUEST_COMMANDS,
    }
}

/// Name of a command (`CREATEALLOCATION`), or `None` if the value is not in its enum.
pub fn command_name(cmd: VmbusCmd) -> Option<&'static str> {
    enum_of(cmd.channel).name_of(cmd.value as i64)
}

/// Layout descriptor of a command.
pub fn command(cmd: VmbusCmd) -> Option<&'static VmbusCmdDesc> {
    COMMANDS.iter().find(|c| c.cmd == cmd)
}
