//! Event detail: the decoded struct tree, buffers, hex, linked VMBus messages.

use askama::Template;
use askama_web::WebTemplate;
use axum::Json;
use axum::extract::{Path, State};

use crate::error::{AppError, HtmlError};
use crate::fmt;
use crate::query::{self, EventDetail};
use crate::state::AppState;

/// `GET /api/traces/{key}/events/{lane}/{i}`.
pub async fn api(
    State(state): State<AppState>,
    Path((key, lane, i)): Path<(String, usize, u32)>,
) -> Result<Json<EventDetail>, AppError> {
    let l = super::load(&state, &key).await?;
    let d = tokio::task::spawn_blocking(move || query::event_detail(&l.index, &l.reader, lane, i))
        .await
        .map_err(|e| AppError::Internal(format!("detail task: {e}")))??;
    Ok(Json(d))
}

/// A field of the decoded tree, flattened with its depth for the template.
pub struct FieldRow {
    /// Indentation level.
    pub depth: usize,
    /// Name.
    pub name: String,
    /// `@offset+size`.
    pub at: String,
    /// Type.
    pub ty: String,
    /// Rendered value.
    pub value: String,
}

fn flatten(f: &driver_core::Field, depth: usize, out: &mut Vec<FieldRow>) {
    out.push(FieldRow {
        depth,
        name: f.name.clone(),
        at: format!("@{}+{}", f.offset, f.size),
        ty: f.ty.clone(),
        value: f.rendered.clone(),
    });
    for c in &f.children {
        flatten(c, depth + 1, out);
    }
}

/// A message block of the page.
pub struct MsgBlock {
    /// Title line.
    pub title: String,
    /// Fields.
    pub fields: Vec<FieldRow>,
    /// Hex.
    pub hex: String,
}

/// `GET /traces/{key}/events/{lane}/{i}`.
#[derive(Template, WebTemplate)]
#[template(path = "trace/event.html")]
pub struct EventPage {
    /// Key.
    pub key: String,
    /// URL-encoded key.
    pub href: String,
    /// Name.
    pub name: String,
    /// Facts.
    pub facts: Vec<(String, String)>,
    /// Decoded ioctl fields.
    pub fields: Vec<FieldRow>,
    /// Notes from the decoder.
    pub notes: Vec<String>,
    /// Raw buffers (title, hex).
    pub buffers: Vec<(String, String)>,
    /// VMBus messages.
    pub messages: Vec<MsgBlock>,
    /// Timeline deep link.
    pub timeline: String,
}

/// The event page.
pub async fn page(
    State(state): State<AppState>,
    Path((key, lane, i)): Path<(String, usize, u32)>,
) -> Result<EventPage, HtmlError> {
    let l = super::load(&state, &key).await?;
    let l2 = l.clone();
    let d =
        tokio::task::spawn_blocking(move || query::event_detail(&l2.index, &l2.reader, lane, i))
            .await
            .map_err(|e| AppError::Internal(format!("detail task: {e}")))??;
    let mut facts = vec![
        ("kind".to_string(), d.kind.to_string()),
        ("start".into(), fmt::ns(d.t)),
        ("duration".into(), fmt::ns(d.d as u64)),
        ("pid / tid".into(), format!("{} / {}", d.pid, d.tid)),
    ];
    let mut fields = Vec::new();
    let mut notes = Vec::new();
    let mut buffers = Vec::new();
    if let Some(io) = &d.ioctl {
        facts.push(("id".into(), io.id.to_string()));
        facts.push(("code".into(), format!("{} {}", io.code, io.decoded.ioc)));
        facts.push(("fd".into(), io.fd.to_string()));
        facts.push(("return".into(), io.ret_rendered.clone()));
        flatten(&io.decoded.arg, 0, &mut fields);
        for b in &io.decoded.buffers {
            flatten(b, 0, &mut fields);
        }
        notes = io.decoded.notes.clone();
        for b in &io.buffers {
            let mut t = format!(
                "{} {} at {}: {} of {} bytes",
                b.role, b.path, b.addr, b.captured, b.len
            );
            if b.truncated {
                t.push_str(" (truncated)");
            }
            if b.unreadable {
                t.push_str(" (unreadable)");
            }
            buffers.push((t, b.hex.clone()));
        }
    }
    let messages = d
        .messages
        .iter()
        .map(|m| {
            let mut f = Vec::new();
            for x in &m.decoded.fields {
                flatten(x, 0, &mut f);
            }
            MsgBlock {
                title: format!(
                    "{} {} at {} (channel {}, request {}{})",
                    m.dir,
                    m.decoded.name,
                    fmt::ns(m.t),
                    m.channel.as_deref().unwrap_or("global"),
                    m.request_id,
                    m.status
                        .map(|s| format!(", status {s}"))
                        .unwrap_or_default()
                ),
                fields: f,
                hex: m.hex.clone(),
            }
        })
        .collect();
    let w = (d.d as u64).max(1000) * 20;
    let t0 = d.t.saturating_sub(w / 2);
    Ok(EventPage {
        href: fmt::enc(&l.key),
        timeline: format!(
            "/traces/{}/timeline?t0={}&t1={}&ev={}:{}",
            fmt::enc(&l.key),
            t0,
            t0 + w,
            d.lane,
            d.i
        ),
        key: l.key.clone(),
        name: d.name.clone(),
        facts,
        fields,
        notes,
        buffers,
        messages,
    })
}
