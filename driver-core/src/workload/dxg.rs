//! dxg scenarios. Structs come from `crate::dxg::types`; codes from the table by name.

use super::{Runner, WorkloadError};
use crate::dxg::types::*;
use crate::layout::Pod;

type Res = Result<(), WorkloadError>;

/// The address a scenario puts in a struct: a copy of `v` in the staging arena, written
/// back to `v` after the next call (see [`super::arena`]).
fn addr<T: Copy>(v: &mut [T]) -> u64 {
    // SAFETY: every caller passes a local that outlives the next ioctl it is used by.
    unsafe { super::arena::stage(v.as_mut_ptr().cast(), std::mem::size_of_val(v)) }
}

/// Objects a session sets up.
struct Session {
    adapter: u32,
    luid: [u32; 2],
    device: u32,
    paging_queue: u32,
    context: u32,
    fence: u32,
}

fn first_adapter(r: &mut Runner<'_, '_>) -> Result<(u32, [u32; 2]), WorkloadError> {
    let mut e = EnumAdapters3::zeroed();
    r.ok("LX_DXENUMADAPTERS3", &mut e, "count adapters")?;
    let mut infos = vec![AdapterInfo::zeroed(); e.adapter_count.max(1) as usize];
    e.adapters = addr(&mut infos);
    r.ok("LX_DXENUMADAPTERS3", &mut e, "list adapters")?;
    if e.adapter_count == 0 {
        return Err(WorkloadError::Check("no adapters".into()));
    }
    r.note(format!(
        "{} adapter(s), first handle {:#x}",
        e.adapter_count, infos[0].adapter_handle
    ));
    Ok((infos[0].adapter_handle, infos[0].adapter_luid))
}

fn setup(r: &mut Runner<'_, '_>) -> Result<Session, WorkloadError> {
    let (adapter, luid) = first_adapter(r)?;
    let mut d = CreateDevice::zeroed();
    d.adapter = adapter;
    r.ok("LX_DXCREATEDEVICE", &mut d, "create device")?;
    let mut pq = CreatePagingQueue::zeroed();
    pq.device = d.device;
    r.ok("LX_DXCREATEPAGINGQUEUE", &mut pq, "create paging queue")?;
    let mut priv_ = [7u8; 16];
    let mut c = CreateContextVirtual::zeroed();
    c.device = d.device;
    c.client_hint = 3;
    c.priv_drv_data = addr(&mut priv_);
    c.priv_drv_data_size = 16;
    r.ok("LX_DXCREATECONTEXTVIRTUAL", &mut c, "create context")?;
    let mut so = CreateSyncObject2::zeroed();
    so.device = d.device;
    so.info.type_ = 5;
    r.ok(
        "LX_DXCREATESYNCHRONIZATIONOBJECT",
        &mut so,
        "create monitored fence",
    )?;
    Ok(Session {
        adapter,
        luid,
        device: d.device,
        paging_queue: pq.paging_queue,
        context: c.context,
        fence: so.sync_object,
    })
}

fn teardown(r: &mut Runner<'_, '_>, s: &Session) -> Res {
    let mut ds = DestroySyncObject {
        sync_object: s.fence,
    };
    r.ok(
        "LX_DXDESTROYSYNCHRONIZATIONOBJECT",
        &mut ds,
        "destroy fence",
    )?;
    let mut dc = DestroyContext { context: s.context };
    r.ok("LX_DXDESTROYCONTEXT", &mut dc, "destroy context")?;
    let mut dp = DestroyPagingQueue {
        paging_queue: s.paging_queue,
    };
    r.ok("LX_DXDESTROYPAGINGQUEUE", &mut dp, "destroy paging queue")?;
    let mut dd = DestroyDevice { device: s.device };
    r.ok("LX_DXDESTROYDEVICE", &mut dd, "destroy device")?;
    let mut ca = CloseAdapter {
        adapter_handle: s.adapter,
    };
    r.ok("LX_DXCLOSEADAPTER", &mut ca, "close adapter")?;
    Ok(())
}

/// Allocations: returns (resource, handles).
fn allocate(
    r: &mut Runner<'_, '_>,
    device: u32,
    n: usize,
    resource: bool,
) -> Result<(u32, Vec<u32>), WorkloadError> {
    let mut privs = vec![[0u8; 32]; n];
    let mut infos = vec![AllocationInfo2::zeroed(); n];
    for (i, info) in infos.iter_mut().enumerate() {
        privs[i][0] = i as u8 + 1;
        info.priv_drv_data = addr(&mut privs[i]);
        info.priv_drv_data_size = 32;
    }
    let mut rt = [0x5au8; 8];
    let mut a = CreateAllocation::zeroed();
    a.device = device;
    a.alloc_count = n as u32;
    a.allocation_info = addr(&mut infos);
    a.private_runtime_data = addr(&mut rt);
    a.private_runtime_data_size = 8;
    a.flags = resource as u32;
    r.ok("LX_DXCREATEALLOCATION", &mut a, "create allocations")?;
    Ok((a.resource, infos.iter().map(|i| i.allocation).collect()))
}

fn wait_cpu(
    r: &mut Runner<'_, '_>,
    device: u32,
    fence: u32,
    value: u64,
) -> Result<i64, WorkloadError> {
    let mut objs = [fence];
    let mut vals = [value];
    let mut w = WaitSyncObjectFromCpu::zeroed();
    w.device = device;
    w.object_count = 1;
    w.objects = addr(&mut objs);
    w.fence_values = addr(&mut vals);
    r.call("LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMCPU", &mut w)
}

fn signal_gpu2(
    r: &mut Runner<'_, '_>,
    context: u32,
    fence: u32,
    value: u64,
) -> Result<i64, WorkloadError> {
    let mut objs = [fence];
    let mut ctxs = [context];
    let mut vals = [value];
    let mut s = SignalSyncObjectFromGpu2::zeroed();
    s.object_count = 1;
    s.objects = addr(&mut objs);
    s.context_count = 1;
    s.contexts = addr(&mut ctxs);
    s.monitored_fence_values = addr(&mut vals);
    r.ok(
        "LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU2",
        &mut s,
        "signal fence from GPU",
    )
}

fn submit(r: &mut Runner<'_, '_>, context: u32, gpu_va: u64) -> Result<i64, WorkloadError> {
    let mut sc = SubmitCommand::zeroed();
    sc.command_buffer = gpu_va;
    sc.command_length = 256;
    sc.broadcast_context_count = 1;
    sc.broadcast_context[0] = context;
    r.ok("LX_DXSUBMITCOMMAND", &mut sc, "submit")
}

/// Reference §5.3, step by step.
pub fn canonical(r: &mut Runner<'_, '_>) -> Res {
    let (adapter, _) = first_adapter(r)?;
    let mut qd = [0u8; 4];
    let mut q = QueryAdapterInfo::zeroed();
    q.adapter = adapter;
    q.type_ = 57;
    q.private_data = addr(&mut qd);
    q.private_data_size = 4;
    r.ok("LX_DXQUERYADAPTERINFO", &mut q, "ADAPTERTYPE_RENDER")?;
    let mut desc = [0u16; 128];
    q.type_ = 65;
    q.private_data = addr(&mut desc);
    q.private_data_size = 256;
    r.ok("LX_DXQUERYADAPTERINFO", &mut q, "DRIVER_DESCRIPTION")?;
    let name = String::from_utf16_lossy(&desc)
        .trim_end_matches('\0')
        .to_string();
    r.note(format!("adapter {adapter:#x}: {name}"));
    let mut fe = IsFeatureEnabled::zeroed();
    fe.adapter = adapter;
    r.ok("LX_ISFEATUREENABLED", &mut fe, "HWSCH feature")?;
    let mut d = CreateDevice::zeroed();
    d.adapter = adapter;
    r.ok("LX_DXCREATEDEVICE", &mut d, "create device")?;
    let mut pq = CreatePagingQueue::zeroed();
    pq.device = d.device;
    r.ok("LX_DXCREATEPAGINGQUEUE", &mut pq, "create paging queue")?;
    let mut cpriv = [1u8; 16];
    let mut c = CreateContextVirtual::zeroed();
    c.device = d.device;
    c.client_hint = 3;
    c.priv_drv_data = addr(&mut cpriv);
    c.priv_drv_data_size = 16;
    r.ok("LX_DXCREATECONTEXTVIRTUAL", &mut c, "create context")?;
    let mut hq = CreateHwQueue::zeroed();
    hq.context = c.context;
    r.ok("LX_DXCREATEHWQUEUE", &mut hq, "create hw queue")?;
    let mut so = CreateSyncObject2::zeroed();
    so.device = d.device;
    so.info.type_ = 5;
    r.ok(
        "LX_DXCREATESYNCHRONIZATIONOBJECT",
        &mut so,
        "monitored fence",
    )?;
    let (res, allocs) = allocate(r, d.device, 2, true)?;
    let mut list = allocs.clone();
    let mut mr = MakeResident::zeroed();
    mr.paging_queue = pq.paging_queue;
    mr.alloc_count = list.len() as u32;
    mr.allocation_list = addr(&mut list);
    let mrr = r.ok("LX_DXMAKERESIDENT", &mut mr, "make resident")?;
    r.note(format!(
        "MAKERESIDENT returned {mrr:#x}, paging fence {}",
        mr.paging_fence_value
    ));
    let mut rv = ReserveGpuVa::zeroed();
    rv.adapter = adapter;
    rv.size = 0x40000;
    r.ok("LX_DXRESERVEGPUVIRTUALADDRESS", &mut rv, "reserve GPU VA")?;
    let mut mv = MapGpuVa::zeroed();
    mv.paging_queue = pq.paging_queue;
    mv.base_address = rv.virtual_address;
    mv.allocation = allocs[0];
    mv.size_in_pages = 16;
    mv.protection = 1;
    r.ok("LX_DXMAPGPUVIRTUALADDRESS", &mut mv, "map GPU VA")?;
    let mut ops = [UpdateGpuVaOperation::zeroed()];
    ops[0].operation = 0;
    ops[0].base_address = rv.virtual_address + 0x20000;
    ops[0].size = 0x10000;
    ops[0].allocation = allocs[1] as u64;
    ops[0].allocation_size = 0x10000;
    let mut up = UpdateGpuVa::zeroed();
    up.device = d.device;
    up.context = c.context;
    up.fence_object = so.sync_object;
    up.fence_value = 1;
    up.num_operations = 1;
    up.operations = addr(&mut ops);
    r.ok("LX_DXUPDATEGPUVIRTUALADDRESS", &mut up, "update GPU VA")?;
    let mut lk = Lock2::zeroed();
    lk.device = d.device;
    lk.allocation = allocs[0];
    r.ok("LX_DXLOCK2", &mut lk, "lock")?;
    let mut ul = Unlock2 {
        device: d.device,
        allocation: allocs[0],
    };
    r.ok("LX_DXUNLOCK2", &mut ul, "unlock")?;
    let mut ep = [0u8; 64];
    ep[..4].copy_from_slice(&41u32.to_le_bytes());
    let mut es = Escape::zeroed();
    es.adapter = adapter;
    es.device = d.device;
    es.priv_drv_data = addr(&mut ep);
    es.priv_drv_data_size = 64;
    r.ok("LX_DXESCAPE", &mut es, "escape")?;
    r.note(format!(
        "escape reply counter {}",
        u32::from_le_bytes(ep[..4].try_into().expect("4"))
    ));
    submit(r, c.context, mv.virtual_address)?;
    signal_gpu2(r, c.context, so.sync_object, 2)?;
    let w = wait_cpu(r, d.device, so.sync_object, 2)?;
    r.note(format!("CPU wait for fence value 2 returned {w}"));
    if w != 0 {
        return Err(WorkloadError::Call {
            ioctl: "LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMCPU".into(),
            ret: w,
            what: "wait for the frame fence".into(),
        });
    }
    let mut da = DestroyAllocation2::zeroed();
    da.device = d.device;
    da.resource = res;
    r.ok("LX_DXDESTROYALLOCATION2", &mut da, "destroy resource")?;
    let mut ds = DestroySyncObject {
        sync_object: so.sync_object,
    };
    r.ok(
        "LX_DXDESTROYSYNCHRONIZATIONOBJECT",
        &mut ds,
        "destroy fence",
    )?;
    let mut dh = DestroyHwQueue { queue: hq.queue };
    r.ok("LX_DXDESTROYHWQUEUE", &mut dh, "destroy hw queue")?;
    let mut dc = DestroyContext { context: c.context };
    r.ok("LX_DXDESTROYCONTEXT", &mut dc, "destroy context")?;
    let mut dp = DestroyPagingQueue {
        paging_queue: pq.paging_queue,
    };
    r.ok("LX_DXDESTROYPAGINGQUEUE", &mut dp, "destroy paging queue")?;
    let mut dd = DestroyDevice { device: d.device };
    r.ok("LX_DXDESTROYDEVICE", &mut dd, "destroy device")?;
    let mut ca = CloseAdapter {
        adapter_handle: adapter,
    };
    r.ok("LX_DXCLOSEADAPTER", &mut ca, "close adapter")?;
    Ok(())
}

/// Many submits, GPU signals and CPU waits.
pub fn frame_loop(r: &mut Runner<'_, '_>) -> Res {
    let s = setup(r)?;
    for frame in 1..=8u64 {
        submit(r, s.context, 0x1_0000_0000 + frame * 0x1000)?;
        signal_gpu2(r, s.context, s.fence, frame)?;
        let w = wait_cpu(r, s.device, s.fence, frame)?;
        if w != 0 {
            return Err(WorkloadError::Check(format!(
                "frame {frame}: wait returned {w}"
            )));
        }
        let mut gs = GetDeviceState::zeroed();
        gs.device = s.device;
        gs.state_type = 1;
        r.ok("LX_DXGETDEVICESTATE", &mut gs, "execution state")?;
    }
    r.note("8 frames presented");
    teardown(r, &s)
}

/// Hardware-queue compute loop.
pub fn compute_loop(r: &mut Runner<'_, '_>) -> Res {
    let s = setup(r)?;
    let mut hq = CreateHwQueue::zeroed();
    hq.context = s.context;
    r.ok("LX_DXCREATEHWQUEUE", &mut hq, "create hw queue")?;
    let mut qs = [hq.queue];
    for i in 1..=6u64 {
        let mut sub = SubmitCommandToHwQueue::zeroed();
        sub.hwqueue = hq.queue;
        sub.hwqueue_progress_fence_id = i;
        sub.command_buffer = 0x2_0000_0000 + i * 0x100;
        sub.command_length = 64;
        r.ok(
            "LX_DXSUBMITCOMMANDTOHWQUEUE",
            &mut sub,
            "submit to hw queue",
        )?;
        let mut objs = [s.fence];
        let mut vals = [i];
        let mut sig = SubmitSignalSyncObjectsToHwQueue::zeroed();
        sig.hwqueue_count = 1;
        sig.hwqueues = addr(&mut qs);
        sig.object_count = 1;
        sig.objects = addr(&mut objs);
        sig.fence_values = addr(&mut vals);
        r.ok(
            "LX_DXSUBMITSIGNALSYNCOBJECTSTOHWQUEUE",
            &mut sig,
            "signal from hw queue",
        )?;
        let mut wt = SubmitWaitForSyncObjectsToHwQueue::zeroed();
        wt.hwqueue = hq.queue;
        wt.object_count = 1;
        wt.objects = addr(&mut objs);
        wt.fence_values = addr(&mut vals);
        r.ok(
            "LX_DXSUBMITWAITFORSYNCOBJECTSTOHWQUEUE",
            &mut wt,
            "hw queue waits",
        )?;
        let w = wait_cpu(r, s.device, hq.queue_progress_fence, i)?;
        if w != 0 {
            return Err(WorkloadError::Check(format!(
                "dispatch {i}: progress wait returned {w}"
            )));
        }
    }
    // Legacy paths on the context: SIGNAL/WAIT2 and FROMGPU / FROMCPU.
    let mut sg = SignalSyncObject2::zeroed();
    sg.context = s.context;
    sg.object_count = 1;
    sg.object_array[0] = s.fence;
    sg.fence_value = 7;
    r.ok(
        "LX_DXSIGNALSYNCHRONIZATIONOBJECT",
        &mut sg,
        "signal (legacy)",
    )?;
    let mut wg = WaitSyncObject2::zeroed();
    wg.context = s.context;
    wg.object_count = 1;
    wg.object_array[0] = s.fence;
    wg.fence_value = 7;
    r.ok(
        "LX_DXWAITFORSYNCHRONIZATIONOBJECT",
        &mut wg,
        "wait (legacy)",
    )?;
    let mut objs = [s.fence];
    let mut vals = [8u64];
    let mut sf = SignalSyncObjectFromGpu::zeroed();
    sf.context = s.context;
    sf.object_count = 1;
    sf.objects = addr(&mut objs);
    sf.monitored_fence_values = addr(&mut vals);
    r.ok(
        "LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU",
        &mut sf,
        "signal from GPU",
    )?;
    let mut wf = WaitSyncObjectFromGpu::zeroed();
    wf.context = s.context;
    wf.object_count = 1;
    wf.objects = addr(&mut objs);
    wf.monitored_fence_values = addr(&mut vals);
    r.ok(
        "LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMGPU",
        &mut wf,
        "GPU waits",
    )?;
    let mut cv = [9u64];
    let mut sc = SignalSyncObjectFromCpu::zeroed();
    sc.device = s.device;
    sc.object_count = 1;
    sc.objects = addr(&mut objs);
    sc.fence_values = addr(&mut cv);
    r.ok(
        "LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMCPU",
        &mut sc,
        "signal from CPU",
    )?;
    let w = wait_cpu(r, s.device, s.fence, 9)?;
    r.note(format!("6 dispatches; final CPU wait returned {w}"));
    let mut dh = DestroyHwQueue { queue: hq.queue };
    r.ok("LX_DXDESTROYHWQUEUE", &mut dh, "destroy hw queue")?;
    teardown(r, &s)
}

/// Allocation lifetime churn.
pub fn resource_churn(r: &mut Runner<'_, '_>) -> Res {
    let s = setup(r)?;
    for round in 0..3 {
        let (_, mut allocs) = allocate(r, s.device, 3, false)?;
        let n = allocs.len() as u32;
        let mut mr = MakeResident::zeroed();
        mr.paging_queue = s.paging_queue;
        mr.alloc_count = n;
        mr.allocation_list = addr(&mut allocs);
        r.ok("LX_DXMAKERESIDENT", &mut mr, "make resident")?;
        let mut mv = MapGpuVa::zeroed();
        mv.paging_queue = s.paging_queue;
        mv.allocation = allocs[0];
        mv.size_in_pages = 4;
        r.ok(
            "LX_DXMAPGPUVIRTUALADDRESS",
            &mut mv,
            "map GPU VA (driver picks)",
        )?;
        let mut res = vec![0u32; allocs.len()];
        let mut qr = QueryAllocationResidency::zeroed();
        qr.device = s.device;
        qr.allocations = addr(&mut allocs);
        qr.allocation_count = n;
        qr.residency_status = addr(&mut res);
        r.ok("LX_DXQUERYALLOCATIONRESIDENCY", &mut qr, "residency")?;
        let mut prio = vec![0x7000_0000u32 + round; allocs.len()];
        let mut sp = SetAllocationPriority::zeroed();
        sp.device = s.device;
        sp.allocation_list = addr(&mut allocs);
        sp.allocation_count = n;
        sp.priorities = addr(&mut prio);
        r.ok("LX_DXSETALLOCATIONPRIORITY", &mut sp, "set priority")?;
        let mut got = vec![0u32; allocs.len()];
        let mut gp = GetAllocationPriority::zeroed();
        gp.device = s.device;
        gp.allocation_list = addr(&mut allocs);
        gp.allocation_count = n;
        gp.priorities = addr(&mut got);
        r.ok("LX_DXGETALLOCATIONPRIORITY", &mut gp, "get priority")?;
        if got != prio {
            return Err(WorkloadError::Check(format!(
                "priorities {got:x?} != {prio:x?}"
            )));
        }
        let mut up = UpdateAllocProperty::zeroed();
        up.paging_queue = s.paging_queue;
        up.allocation = allocs[1];
        up.supported_segment_set = 3;
        r.ok("LX_DXUPDATEALLOCPROPERTY", &mut up, "update alloc property")?;
        let mut ic = InvalidateCache::zeroed();
        ic.device = s.device;
        ic.allocation = allocs[2];
        ic.length = 4096;
        r.ok("LX_DXINVALIDATECACHE", &mut ic, "invalidate cache")?;
        let mut off = OfferAllocations::zeroed();
        off.device = s.device;
        off.allocations = addr(&mut allocs);
        off.allocation_count = n;
        off.priority = 1;
        r.ok("LX_DXOFFERALLOCATIONS", &mut off, "offer")?;
        let mut results = vec![9u32; allocs.len()];
        let mut rc = ReclaimAllocations2::zeroed();
        rc.paging_queue = s.paging_queue;
        rc.allocation_count = n;
        rc.allocations = addr(&mut allocs);
        rc.results = addr(&mut results);
        r.ok("LX_DXRECLAIMALLOCATIONS2", &mut rc, "reclaim")?;
        let mut ev = Evict::zeroed();
        ev.device = s.device;
        ev.alloc_count = n;
        ev.allocations = addr(&mut allocs);
        r.ok("LX_DXEVICT", &mut ev, "evict")?;
        let mut da = DestroyAllocation2::zeroed();
        da.device = s.device;
        da.allocations = addr(&mut allocs);
        da.alloc_count = n;
        r.ok("LX_DXDESTROYALLOCATION2", &mut da, "destroy allocations")?;
    }
    let mut rv = ReserveGpuVa::zeroed();
    rv.adapter = s.adapter;
    rv.size = 0x20000;
    r.ok("LX_DXRESERVEGPUVIRTUALADDRESS", &mut rv, "reserve")?;
    let mut fv = FreeGpuVa::zeroed();
    fv.adapter = s.adapter;
    fv.base_address = rv.virtual_address;
    fv.size = 0x20000;
    r.ok("LX_DXFREEGPUVIRTUALADDRESS", &mut fv, "free")?;
    r.note("3 rounds of 3 allocations");
    teardown(r, &s)
}

/// Several contexts interleaving work on one fence (one thread, deterministic order).
pub fn multi_submit(r: &mut Runner<'_, '_>) -> Res {
    let s = setup(r)?;
    let mut ctxs = vec![s.context];
    for _ in 0..3 {
        let mut c = CreateContextVirtual::zeroed();
        c.device = s.device;
        r.ok("LX_DXCREATECONTEXTVIRTUAL", &mut c, "extra context")?;
        ctxs.push(c.context);
    }
    let mut v = 0u64;
    for round in 0..3 {
        for c in &ctxs {
            v += 1;
            submit(r, *c, 0x3_0000_0000 + v * 0x40)?;
            signal_gpu2(r, *c, s.fence, v)?;
        }
        let w = wait_cpu(r, s.device, s.fence, v)?;
        r.note(format!("round {round}: waited for {v} → {w}"));
    }
    for c in &ctxs[1..] {
        let mut dc = DestroyContext { context: *c };
        r.ok("LX_DXDESTROYCONTEXT", &mut dc, "destroy extra context")?;
    }
    teardown(r, &s)
}

/// Queries of every kind.
pub fn queries(r: &mut Runner<'_, '_>) -> Res {
    let mut e2 = EnumAdapters2::zeroed();
    r.ok("LX_DXENUMADAPTERS2", &mut e2, "count (ENUMADAPTERS2)")?;
    let mut infos = vec![AdapterInfo::zeroed(); e2.num_adapters as usize];
    e2.adapters = addr(&mut infos);
    r.ok("LX_DXENUMADAPTERS2", &mut e2, "list (ENUMADAPTERS2)")?;
    r.note(format!(
        "ENUMADAPTERS2 lists {} render adapter(s)",
        e2.num_adapters
    ));
    let mut ol = OpenAdapterFromLuid::zeroed();
    ol.adapter_luid = infos[0].adapter_luid;
    r.ok("LX_DXOPENADAPTERFROMLUID", &mut ol, "open from LUID")?;
    let s = setup(r)?;
    let mut vm = QueryVideoMemoryInfo::zeroed();
    vm.adapter = s.adapter;
    r.ok("LX_DXQUERYVIDEOMEMORYINFO", &mut vm, "video memory")?;
    r.note(format!("budget {} MiB", vm.budget >> 20));
    let mut cr = ChangeVidMemReservation::zeroed();
    cr.adapter = s.adapter;
    cr.reservation = 64 << 20;
    r.ok("LX_DXCHANGEVIDEOMEMORYRESERVATION", &mut cr, "reservation")?;
    let mut cc = QueryClockCalibration::zeroed();
    cc.adapter = s.adapter;
    r.ok("LX_DXQUERYCLOCKCALIBRATION", &mut cc, "clock calibration")?;
    let mut qs = QueryStatistics::zeroed();
    qs.type_ = 0;
    qs.adapter_luid = s.luid;
    r.ok("LX_DXQUERYSTATISTICS", &mut qs, "statistics")?;
    let mut fh = FlushHeapTransitions { adapter: s.adapter };
    r.ok(
        "LX_DXFLUSHHEAPTRANSITIONS",
        &mut fh,
        "flush heap transitions",
    )?;
    for (name, p) in [
        ("LX_DXSETCONTEXTSCHEDULINGPRIORITY", 4),
        ("LX_DXSETCONTEXTINPROCESSSCHEDULINGPRIORITY", 2),
    ] {
        let mut sp = SetContextSchedulingPriority {
            context: s.context,
            priority: p,
        };
        r.ok(name, &mut sp, "set context priority")?;
    }
    for name in [
        "LX_DXGETCONTEXTSCHEDULINGPRIORITY",
        "LX_DXGETCONTEXTINPROCESSSCHEDULINGPRIORITY",
    ] {
        let mut gp = GetContextSchedulingPriority {
            context: s.context,
            priority: 0,
        };
        r.ok(name, &mut gp, "get context priority")?;
    }
    let mut pids = [0u32; 8];
    let mut ep = EnumProcesses::zeroed();
    ep.adapter_luid = s.luid;
    ep.buffer = addr(&mut pids);
    ep.buffer_count = 8;
    r.ok("LX_DXENUMPROCESSES", &mut ep, "enum processes")?;
    let mut sh = ShareObjectWithHost::zeroed();
    sh.device_handle = s.device;
    sh.object_handle = s.fence;
    r.ok("LX_DXSHAREOBJECTWITHHOST", &mut sh, "share with host")?;
    let mut gs = GetDeviceState::zeroed();
    gs.device = s.device;
    gs.state_type = 1;
    r.ok("LX_DXGETDEVICESTATE", &mut gs, "state before")?;
    let mut me = MarkDeviceAsError {
        device: s.device,
        reason: 0,
    };
    r.ok("LX_DXMARKDEVICEASERROR", &mut me, "mark device as error")?;
    r.ok("LX_DXGETDEVICESTATE", &mut gs, "state after")?;
    r.note(format!(
        "execution state after MARKDEVICEASERROR: {}",
        gs.execution_state
    ));
    let mut ca = CloseAdapter {
        adapter_handle: ol.adapter_handle,
    };
    r.ok("LX_DXCLOSEADAPTER", &mut ca, "close LUID handle")?;
    for i in &infos[..e2.num_adapters as usize] {
        let mut ca = CloseAdapter {
            adapter_handle: i.adapter_handle,
        };
        r.ok("LX_DXCLOSEADAPTER", &mut ca, "close enum2 handle")?;
    }
    teardown(r, &s)
}

/// The error conventions of §1.1 / §1.2 / §2.3.
pub fn error_paths(r: &mut Runner<'_, '_>) -> Res {
    let einval = -(libc::EINVAL as i64);
    let enotty = -(libc::ENOTTY as i64);
    // Unknown number, legacy number, wrong struct size.
    let mut buf = [0u8; 128];
    // A valid buffer even for the unknown number: through a FUSE file the kernel copies
    // the struct before the daemon sees the call, so a NULL arg would be -EFAULT there.
    r.raw("nr 0x60", 0xC004_4760, buf.as_mut_ptr() as u64)?;
    let bad = r.raw(
        "LX_DXCREATECONTEXT (legacy)",
        0xC060_4703,
        buf.as_mut_ptr() as u64,
    )?;
    let wrong = r.raw(
        "LX_DXCREATEDEVICE with size 60",
        0xC03C_4702,
        buf.as_mut_ptr() as u64,
    )?;
    if bad != enotty || wrong != enotty {
        return Err(WorkloadError::Check(format!(
            "expected -ENOTTY, got {bad} / {wrong}"
        )));
    }
    let mut dd = DestroyDevice {
        device: 0x4000_1234,
    };
    r.expect("LX_DXDESTROYDEVICE", &mut dd, einval, "bad device handle")?;
    let mut d = CreateDevice::zeroed();
    d.adapter = 0x4000_0fc0;
    r.expect("LX_DXCREATEDEVICE", &mut d, einval, "bad adapter handle")?;
    // ENUMADAPTERS2 with a buffer smaller than the adapter count: -EOVERFLOW.
    let mut one = [AdapterInfo::zeroed(); 1];
    let mut e2 = EnumAdapters2::zeroed();
    e2.num_adapters = 1;
    e2.adapters = addr(&mut one);
    let r2 = r.call("LX_DXENUMADAPTERS2", &mut e2)?;
    r.note(format!("ENUMADAPTERS2 with room for 1: {r2}"));
    let s = setup(r)?;
    // Limits.
    let mut a = CreateAllocation::zeroed();
    a.device = s.device;
    a.alloc_count = 1025;
    r.expect(
        "LX_DXCREATEALLOCATION",
        &mut a,
        einval,
        "alloc_count > 1024",
    )?;
    // A standard allocation with a bad heap: the raw NTSTATUS quirk.
    let mut std_ = CreateStandardAllocation::zeroed();
    std_.type_ = 1;
    std_.existing_heap_size = 4097;
    let mut infos = [AllocationInfo2::zeroed()];
    let mut a = CreateAllocation::zeroed();
    a.device = s.device;
    a.alloc_count = 1;
    a.allocation_info = addr(&mut infos);
    a.priv_drv_data = addr(std::slice::from_mut(&mut std_));
    a.flags = 1 << 16;
    let raw = r.call("LX_DXCREATEALLOCATION", &mut a)?;
    r.note(format!(
        "standard allocation with a bad heap size returned {raw} ({:#x})",
        raw as u32
    ));
    let mut q = QueryAdapterInfo::zeroed();
    q.adapter = s.adapter;
    q.type_ = 57;
    r.expect(
        "LX_DXQUERYADAPTERINFO",
        &mut q,
        einval,
        "private_data_size 0",
    )?;
    let mut small = [0u16; 4];
    q.type_ = 65;
    q.private_data = addr(&mut small);
    q.private_data_size = 8;
    let too_small = r.call("LX_DXQUERYADAPTERINFO", &mut q)?;
    r.note(format!("DRIVER_DESCRIPTION into 8 bytes: {too_small}"));
    q.type_ = 9999;
    let unknown = r.call("LX_DXQUERYADAPTERINFO", &mut q)?;
    r.note(format!("unknown QUERYADAPTERINFO type: {unknown}"));
    let mut w = WaitSyncObject2::zeroed();
    w.context = s.context;
    w.object_count = 33;
    r.expect(
        "LX_DXWAITFORSYNCHRONIZATIONOBJECT",
        &mut w,
        einval,
        "object_count > 32",
    )?;
    let mut so = SignalSyncObjectFromCpu::zeroed();
    so.device = s.device;
    so.object_count = 1;
    so.objects = 8; // page 0: EFAULT
    so.fence_values = 8;
    r.expect(
        "LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMCPU",
        &mut so,
        -(libc::EFAULT as i64),
        "unreadable pointer",
    )?;
    let mut da = DestroyAllocation2::zeroed();
    da.device = s.device;
    r.expect(
        "LX_DXDESTROYALLOCATION2",
        &mut da,
        einval,
        "neither allocations nor resource",
    )?;
    let mut vm = QueryVideoMemoryInfo::zeroed();
    vm.adapter = s.adapter;
    vm.process = 1;
    r.expect(
        "LX_DXQUERYVIDEOMEMORYINFO",
        &mut vm,
        einval,
        "process must be 0",
    )?;
    let mut pids = [0u32; 1];
    let mut ep = EnumProcesses::zeroed();
    ep.adapter_luid = s.luid;
    ep.buffer = addr(&mut pids);
    ep.buffer_count = 0;
    r.expect(
        "LX_DXENUMPROCESSES",
        &mut ep,
        -(libc::EOVERFLOW as i64),
        "buffer too small",
    )?;
    teardown(r, &s)?;
    let mut dd = DestroyDevice { device: s.device };
    r.expect("LX_DXDESTROYDEVICE", &mut dd, einval, "use after destroy")?;
    Ok(())
}
