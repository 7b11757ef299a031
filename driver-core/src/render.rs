//! `dxtrace schema dxg|kvm [--json]` output: [`schema_json`] and [`schema_text`].

use crate::dxg;
use crate::layout::{Kind, StructDesc};
use crate::schema::{Device, IoctlDesc, PointerDesc, PtrAddr};
use serde_json::{Value, json};

fn fields_json(d: &StructDesc) -> Value {
    Value::Array(
        d.c_fields()
            .map(|f| json!({"name": f.name, "offset": f.offset, "size": f.size, "type": f.kind.type_name(f.size)}))
            .collect(),
    )
}

fn pointer_json(p: &PointerDesc) -> Value {
    let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert(
            "elem_type".into(),
            json!(p.elem.type_name(p.elem_size as usize)),
        );
        if let PtrAddr::Field { offset } = p.addr {
            m.insert("offset".into(), json!(offset));
        }
    }
    v
}

fn entry_json(e: &IoctlDesc) -> Value {
    json!({
        "name": e.name,
        "nr": e.nr,
        "code": format!("{:#010x}", e.code),
        "struct": e.layout.name,
        "size": e.layout.size,
        "class": e.class,
        "handler": e.handler,
        "fields": fields_json(e.layout),
        "pointers": e.pointers.iter().map(pointer_json).collect::<Vec<_>>(),
        "handles": serde_json::to_value(e.handles).unwrap_or(Value::Null),
        "vmbus": e.vmbus.iter().map(|v| json!({
            "channel": v.cmd.channel,
            "value": v.cmd.value,
            "name": dxg::vmbus::command_name(v.cmd),
            "when": v.when,
        })).collect::<Vec<_>>(),
        "note": e.note,
    })
}

fn enum_json(e: &crate::layout::EnumDesc) -> Value {
    Value::Array(
        e.values
            .iter()
            .map(|(v, n)| json!({"value": v, "name": n}))
            .collect(),
    )
}

fn push_struct(out: &mut Vec<&'static StructDesc>, d: &'static StructDesc) {
    if d.name.is_empty() || out.iter().any(|x| std::ptr::eq(*x, d) || x.name == d.name) {
        return;
    }
    out.push(d);
}

/// Every struct of a device (ioctl argument structs, nested structs, and for dxg the
/// VMBus structs).
pub fn all_structs(device: Device) -> Vec<&'static StructDesc> {
    let mut out = Vec::new();
    for e in device.table() {
        push_struct(&mut out, e.layout);
        for f in e.layout.fields {
            if let Kind::Struct(d) = f.kind {
                push_struct(&mut out, d);
            }
        }
    }
    match device {
        Device::Dxg => {
            for d in dxg::types::NESTED_STRUCTS {
                push_struct(&mut out, d);
            }
            for d in dxg::vmbus::STRUCTS {
                push_struct(&mut out, d);
            }
        }
        Device::Kvm => {
            for d in crate::kvm::STRUCTS {
                push_struct(&mut out, d);
            }
        }
    }
    out
}

/// The `schema --json` document: `{"device", "ioctls": [...], "vmbus": {...}, "structs": [...]}`.
pub fn schema_json(device: Device) -> Value {
    let vmbus = match device {
        Device::Dxg => json!({
            "global": enum_json(&dxg::vmbus::GLOBAL_COMMANDS),
            "adapter": enum_json(&dxg::vmbus::ADAPTER_COMMANDS),
            "host_to_guest": enum_json(&dxg::vmbus::HOST_TO_GUEST_COMMANDS),
        }),
        Device::Kvm => json!({"global": [], "adapter": [], "host_to_guest": []}),
    };
    json!({
        "device": device.name(),
        "ioctls": device.table().iter().map(entry_json).collect::<Vec<_>>(),
        "vmbus": vmbus,
        "structs": all_structs(device).iter().map(|d| json!({
            "name": d.name,
            "size": d.size,
            "packed": d.packed,
            "fields": fields_json(d),
        })).collect::<Vec<_>>(),
    })
}

/// The text table printed by `dxtrace schema dxg|kvm`.
pub fn schema_text(device: Device) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<5} {:<44} {:<10} {:<46} {:>5} {:<17} handles / vmbus",
        "nr", "name", "code", "struct", "size", "class"
    );
    for e in device.table() {
        let class = serde_json::to_value(e.class)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let handles: Vec<String> = e
            .handles
            .iter()
            .map(|h| {
                let loc = match h.loc {
                    crate::schema::Loc::Field { path, .. } => path.to_string(),
                    crate::schema::Loc::Elem {
                        pointer, offset, ..
                    } => format!("{pointer}[].@{offset}"),
                    crate::schema::Loc::Return => "return".into(),
                    crate::schema::Loc::Arg => "arg".into(),
                };
                format!("{:?}:{:?}@{loc}", h.effect, h.handle_type)
            })
            .collect();
        let vm: Vec<String> = e
            .vmbus
            .iter()
            .map(|v| crate::decode::vmbus_cmd_label(v.cmd))
            .collect();
        let _ = writeln!(
            s,
            "{:<#5x} {:<44} {:<#010x} {:<46} {:>5} {:<17} {} {}",
            e.nr,
            e.name,
            e.code,
            e.layout.name,
            e.layout.size,
            class,
            handles.join(" "),
            if vm.is_empty() {
                String::new()
            } else {
                format!("[{}]", vm.join(", "))
            }
        );
        for p in e.pointers {
            write_ptr(&mut s, p, 1);
        }
    }
    s
}

fn write_ptr(s: &mut String, p: &PointerDesc, depth: usize) {
    use std::fmt::Write;
    let _ = writeln!(
        s,
        "{:indent$}-> {} {:?} len={:?} elem={} dir={:?} max={} cond={:?}",
        "",
        p.path,
        p.addr,
        p.len,
        p.elem_size,
        p.dir,
        p.max_bytes,
        p.cond,
        indent = 6 + depth * 2
    );
    for n in p.nested {
        write_ptr(s, n, depth + 1);
    }
}
