//! Server state: the served roots, the trace catalogue, path checks and the index cache.
//!
//! A trace is named by a *key*: `<root label>/<path relative to the root>` for a
//! directory root (`samples/synthetic-dxg.dxtrace`), or the file name for a file root.
//! Keys are the only way a request names a file; [`AppState::resolve`] refuses absolute
//! paths and `..`, canonicalises, and refuses anything (a symlink, say) that lands
//! outside the canonical root.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::{OnceCell, Semaphore};
use traces::Reader;

use crate::cache::{self, SourceKey};
use crate::error::AppError;
use crate::index::TraceIndex;
use crate::replay::ReplayJob;

/// Default limit of an uploaded trace, bytes.
pub const DEFAULT_UPLOAD_LIMIT: usize = 256 << 20;
/// Default limit of any other request body, bytes (the API takes no bodies but uploads).
pub const DEFAULT_BODY_LIMIT: usize = 64 << 10;
/// Default time a request may take before it is answered 408.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a connection may stay silent (no byte read or written) before it is
/// closed: slow or stalled clients hold a task and a socket, never a worker, and not
/// for long.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How the server is set up.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Files and directories whose `.dxtrace` files are served.
    pub paths: Vec<PathBuf>,
    /// Where uploads go (created if missing, served as the root `uploads`); `None`
    /// disables uploads.
    pub upload_dir: Option<PathBuf>,
    /// Largest accepted upload, bytes.
    pub upload_limit: usize,
    /// Threads for index builds.
    pub threads: usize,
    /// Where indexes and statistics are cached across restarts ([`crate::cache`]);
    /// `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Largest request body other than an upload, bytes.
    pub body_limit: usize,
    /// Longest a request may take (408 after that).
    pub request_timeout: Duration,
    /// Longest a connection may stay silent before it is closed.
    pub idle_timeout: Duration,
    /// Replays that may run at once (each trace has at most one running).
    pub max_replays: usize,
}

impl ServeOptions {
    /// Serve `paths` with uploads off, all cores for indexing, the default cache
    /// directory ([`cache::default_dir`]) and the default limits.
    pub fn new(paths: Vec<PathBuf>) -> ServeOptions {
        ServeOptions {
            paths,
            upload_dir: None,
            upload_limit: DEFAULT_UPLOAD_LIMIT,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            cache_dir: cache::default_dir(),
            body_limit: DEFAULT_BODY_LIMIT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_replays: 2,
        }
    }
}

/// One served root.
#[derive(Debug, Clone)]
pub struct Root {
    /// First component of keys under this root.
    pub label: String,
    /// Canonical path.
    pub path: PathBuf,
    /// Directory (else a single file).
    pub is_dir: bool,
}

/// Where a trace's index came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexOrigin {
    /// Built from the trace now.
    Built,
    /// Loaded from the on-disk cache.
    Cache,
}

/// A trace file and its index, loaded once.
#[derive(Debug)]
pub struct Loaded {
    /// Key.
    pub key: String,
    /// Canonical path.
    pub path: PathBuf,
    /// The open reader (detail views re-read single frames through it).
    pub reader: Reader,
    /// The index.
    pub index: TraceIndex,
    /// Built now or loaded from the cache.
    pub origin: IndexOrigin,
    /// Wall time of the build or of the cache load, ms.
    pub load_ms: u64,
    /// Identity of the file the index was built from.
    pub source: SourceKey,
    /// `analysis` statistics, computed on first use.
    stats: OnceCell<Result<Arc<analysis::Stats>, String>>,
}

#[derive(Debug)]
struct CacheEntry {
    size: u64,
    mtime: Option<SystemTime>,
    cell: OnceCell<Result<Arc<Loaded>, String>>,
}

#[derive(Debug)]
struct Inner {
    roots: Vec<Root>,
    upload: Option<Root>,
    upload_limit: usize,
    threads: usize,
    cache_dir: Option<PathBuf>,
    body_limit: usize,
    request_timeout: Duration,
    idle_timeout: Duration,
    cache: Mutex<HashMap<PathBuf, Arc<CacheEntry>>>,
    replays: Mutex<HashMap<PathBuf, Arc<ReplayJob>>>,
    replay_slots: Arc<Semaphore>,
}

/// Shared state of the router (cheap to clone).
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

/// A trace as listed in the library.
#[derive(Debug, Clone, Serialize)]
pub struct TraceEntry {
    /// Key (use it, percent-encoded, in URLs).
    pub key: String,
    /// File size, bytes.
    pub size: u64,
    /// Index facts, when the trace has been indexed.
    pub facts: Option<TraceFacts>,
    /// Why the trace could not be indexed, if it failed.
    pub error: Option<String>,
}

/// What the library shows of an indexed trace.
#[derive(Debug, Clone, Serialize)]
pub struct TraceFacts {
    /// Span, ns.
    pub span_ns: u64,
    /// Processes.
    pub processes: usize,
    /// ioctls.
    pub ioctls: u64,
    /// VMBus round trips.
    pub vmbus: u64,
    /// All records.
    pub records: u64,
    /// Events the capture lost.
    pub dropped: u64,
    /// Capture source (`ebpf`, `emulator`, `generated`…).
    pub source: String,
    /// Damaged regions.
    pub damaged: usize,
}

fn label_of(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into())
}

impl AppState {
    /// Checks and canonicalises the roots; creates the upload dir.
    pub fn new(opts: &ServeOptions) -> Result<AppState, AppError> {
        let mut roots: Vec<Root> = Vec::new();
        let add = |p: &Path, roots: &mut Vec<Root>| -> Result<Root, AppError> {
            let path = std::fs::canonicalize(p)
                .map_err(|e| AppError::NotFound(format!("cannot serve {}: {e}", p.display())))?;
            let is_dir = path.is_dir();
            let base = label_of(&path);
            let mut label = base.clone();
            let mut n = 2;
            while roots.iter().any(|r| r.label == label) {
                label = format!("{base}-{n}");
                n += 1;
            }
            let r = Root {
                label,
                path,
                is_dir,
            };
            roots.push(r.clone());
            Ok(r)
        };
        for p in &opts.paths {
            add(p, &mut roots)?;
        }
        let upload = match &opts.upload_dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| {
                    AppError::Internal(format!("cannot create upload dir {}: {e}", d.display()))
                })?;
                let canon = std::fs::canonicalize(d)
                    .map_err(|e| AppError::Internal(format!("upload dir: {e}")))?;
                match roots.iter().find(|r| r.path == canon) {
                    Some(r) => Some(r.clone()),
                    None => Some(add(d, &mut roots)?),
                }
            }
            None => None,
        };
        Ok(AppState {
            inner: Arc::new(Inner {
                roots,
                upload,
                upload_limit: opts.upload_limit,
                threads: opts.threads.max(1),
                cache_dir: opts.cache_dir.clone(),
                body_limit: opts.body_limit,
                request_timeout: opts.request_timeout,
                idle_timeout: opts.idle_timeout,
                cache: Mutex::new(HashMap::new()),
                replays: Mutex::new(HashMap::new()),
                replay_slots: Arc::new(Semaphore::new(opts.max_replays.max(1))),
            }),
        })
    }

    /// The served roots.
    pub fn roots(&self) -> &[Root] {
        &self.inner.roots
    }

    /// The upload root, if uploads are on.
    pub fn upload_root(&self) -> Option<&Root> {
        self.inner.upload.as_ref()
    }

    /// Largest accepted upload, bytes.
    pub fn upload_limit(&self) -> usize {
        self.inner.upload_limit
    }

    /// Largest other request body, bytes.
    pub fn body_limit(&self) -> usize {
        self.inner.body_limit
    }

    /// Longest a request may take.
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// Longest a connection may stay silent.
    pub fn idle_timeout(&self) -> Duration {
        self.inner.idle_timeout
    }

    /// The cache directory, if indexes are cached on disk.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.inner.cache_dir.as_deref()
    }

    /// Threads for index builds and statistics.
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// Replay jobs by trace path, and the slots that bound how many run at once.
    pub(crate) fn replays(&self) -> (&Mutex<HashMap<PathBuf, Arc<ReplayJob>>>, &Arc<Semaphore>) {
        (&self.inner.replays, &self.inner.replay_slots)
    }

    /// Every `.dxtrace` file under the roots (directories searched 4 levels deep;
    /// symlinks followed only when they stay inside their root), as (key, path).
    pub fn catalogue(&self) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        for r in &self.inner.roots {
            if !r.is_dir {
                out.push((r.label.clone(), r.path.clone()));
                continue;
            }
            walk(&r.path, &r.path, &r.label, 0, &mut out);
        }
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }

    /// Turns a key from a request into a canonical file path under a root.
    pub fn resolve(&self, key: &str) -> Result<PathBuf, AppError> {
        if key.is_empty() {
            return Err(AppError::BadRequest("empty trace name".into()));
        }
        if key.contains('\0') || key.contains('\\') {
            return Err(AppError::BadRequest(format!(
                "trace name {key:?} contains a forbidden character"
            )));
        }
        let p = Path::new(key);
        if p.is_absolute() {
            return Err(AppError::BadRequest(format!(
                "trace name {key:?} is an absolute path; use a name from the library"
            )));
        }
        // Path::components() skips "." and empty segments; keys must not have them
        // either, so that one trace has one key
        if p.components().any(|c| !matches!(c, Component::Normal(_)))
            || key
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Err(AppError::BadRequest(format!(
                "trace name {key:?} contains '..' or '.'; use a name from the library"
            )));
        }
        let (first, rest) = match key.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (key, None),
        };
        let root = self
            .inner
            .roots
            .iter()
            .find(|r| r.label == first)
            .ok_or_else(|| AppError::NotFound(format!("no trace {key:?}")))?;
        let cand = match (root.is_dir, rest) {
            (false, None) => return Ok(root.path.clone()),
            (true, Some(rest)) if !rest.is_empty() => root.path.join(rest),
            _ => return Err(AppError::NotFound(format!("no trace {key:?}"))),
        };
        let canon = std::fs::canonicalize(&cand)
            .map_err(|_| AppError::NotFound(format!("no trace {key:?}")))?;
        if !canon.starts_with(&root.path) {
            return Err(AppError::Forbidden(format!(
                "trace name {key:?} resolves outside the served directories"
            )));
        }
        if !canon.is_file() {
            return Err(AppError::NotFound(format!("{key:?} is not a trace file")));
        }
        Ok(canon)
    }

    /// The loaded trace for `key`, building its index on first use (on a blocking
    /// thread; concurrent requests wait for the same build). A file that changed size
    /// or mtime is re-indexed.
    pub async fn load(&self, key: &str) -> Result<Arc<Loaded>, AppError> {
        let path = self.resolve(key)?;
        let meta =
            std::fs::metadata(&path).map_err(|e| AppError::NotFound(format!("{key:?}: {e}")))?;
        let entry = {
            let mut cache = self.inner.cache.lock().expect("cache lock");
            let e = cache.entry(path.clone()).or_insert_with(|| {
                Arc::new(CacheEntry {
                    size: meta.len(),
                    mtime: meta.modified().ok(),
                    cell: OnceCell::new(),
                })
            });
            if e.size != meta.len() || e.mtime != meta.modified().ok() {
                *e = Arc::new(CacheEntry {
                    size: meta.len(),
                    mtime: meta.modified().ok(),
                    cell: OnceCell::new(),
                });
            }
            e.clone()
        };
        let threads = self.inner.threads;
        let cache_dir = self.inner.cache_dir.clone();
        let key_owned = key.to_string();
        // The build runs in its own task: a request that gives up (timeout, closed
        // connection) does not cancel it, so the next request finds it done.
        let task = tokio::spawn(async move {
            entry
                .cell
                .get_or_init(|| async move {
                    let k = key_owned.clone();
                    tokio::task::spawn_blocking(move || open_indexed(k, path, threads, cache_dir))
                        .await
                        .unwrap_or_else(|e| Err(format!("index build panicked: {e}")))
                })
                .await
                .clone()
        });
        let res = task
            .await
            .map_err(|e| AppError::Internal(format!("index task: {e}")))?;
        res.map_err(|e| AppError::BadRequest(format!("cannot read trace {key:?}: {e}")))
    }

    /// The `analysis` statistics of a loaded trace (ioctls, processes, threads, VMBus
    /// commands), computed once on a blocking thread and cached beside the index.
    pub async fn stats(&self, l: &Arc<Loaded>) -> Result<Arc<analysis::Stats>, AppError> {
        let threads = self.inner.threads;
        let cache_dir = self.inner.cache_dir.clone();
        let l2 = l.clone();
        let task = tokio::spawn(async move {
            let l3 = l2.clone();
            l2.stats
                .get_or_init(|| async move {
                    tokio::task::spawn_blocking(move || stats_of(&l3, threads, cache_dir))
                        .await
                        .unwrap_or_else(|e| Err(format!("statistics panicked: {e}")))
                })
                .await
                .clone()
        });
        task.await
            .map_err(|e| AppError::Internal(format!("statistics task: {e}")))?
            .map_err(|e| AppError::Internal(format!("statistics of {}: {e}", l.key)))
    }

    /// The loaded trace if it is already indexed (never starts a build).
    pub fn peek(&self, key: &str) -> Option<Result<Arc<Loaded>, String>> {
        let path = self.resolve(key).ok()?;
        let cache = self.inner.cache.lock().expect("cache lock");
        cache.get(&path).and_then(|e| e.cell.get().cloned())
    }

    /// The library listing.
    pub fn library(&self) -> Vec<TraceEntry> {
        self.catalogue()
            .into_iter()
            .map(|(key, path)| {
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                let (facts, error) = match self.peek(&key) {
                    Some(Ok(l)) => (Some(facts_of(&l.index)), None),
                    Some(Err(e)) => (None, Some(e)),
                    None => (None, None),
                };
                TraceEntry {
                    key,
                    size,
                    facts,
                    error,
                }
            })
            .collect()
    }

    /// Indexes every trace of the catalogue, one after the other (started by
    /// [`crate::serve`] so the library fills in without anyone waiting).
    pub async fn index_all(&self) {
        for (key, _) in self.catalogue() {
            if let Err(e) = self.load(&key).await {
                tracing::warn!(%key, error = %e, "cannot index");
            }
        }
    }
}

/// Opens `path` and gets its index: from the cache when a valid entry for this exact
/// file exists, else built (and then cached).
fn open_indexed(
    key: String,
    path: PathBuf,
    threads: usize,
    cache_dir: Option<PathBuf>,
) -> Result<Arc<Loaded>, String> {
    let t = Instant::now();
    let source = SourceKey::of(&path).map_err(|e| e.to_string())?;
    let reader = Reader::open(&path).map_err(|e| e.to_string())?;
    let file = cache_dir
        .as_ref()
        .map(|d| cache::file_for(d, "index", &path));
    let cached = match &file {
        Some(f) => match cache::read::<TraceIndex>(f, &source) {
            Ok(ix) => Some(ix),
            Err(cache::Miss::Absent) => None,
            Err(why) => {
                tracing::warn!(%key, cache = %f.display(), %why, "index cache not used; rebuilding");
                None
            }
        },
        None => None,
    };
    let (index, origin) = match cached {
        Some(ix) => (ix, IndexOrigin::Cache),
        None => {
            let ix = TraceIndex::build(&reader, threads);
            if let Some(f) = &file {
                match cache::write(f, &source, &ix) {
                    Ok(()) => tracing::debug!(%key, cache = %f.display(), "index cached"),
                    Err(e) => tracing::warn!(%key, error = %e, "cannot write the index cache"),
                }
            }
            (ix, IndexOrigin::Built)
        }
    };
    let load_ms = t.elapsed().as_millis() as u64;
    match origin {
        IndexOrigin::Cache => tracing::info!(%key, ms = load_ms, "index loaded from cache"),
        IndexOrigin::Built => tracing::info!(%key, ms = load_ms, "indexed"),
    }
    Ok(Arc::new(Loaded {
        key,
        path,
        reader,
        index,
        origin,
        load_ms,
        source,
        stats: OnceCell::new(),
    }))
}

fn stats_of(
    l: &Loaded,
    threads: usize,
    cache_dir: Option<PathBuf>,
) -> Result<Arc<analysis::Stats>, String> {
    let file = cache_dir
        .as_ref()
        .map(|d| cache::file_for(d, "stats", &l.path));
    if let Some(f) = &file {
        match cache::read::<analysis::Stats>(f, &l.source) {
            Ok(s) => return Ok(Arc::new(s)),
            Err(cache::Miss::Absent) => {}
            Err(why) => {
                tracing::warn!(key = %l.key, cache = %f.display(), %why, "statistics cache not used; recomputing")
            }
        }
    }
    let span = l.index.end.saturating_sub(l.index.start);
    let opts = analysis::StatsOptions {
        by: None,
        // a few hundred throughput buckets whatever the span (the timeline draws its own)
        bucket_ns: (span / 256).max(1_000_000),
        threads,
    };
    // Streamed: memory holds per-group figures, not the trace's rows.
    let s = analysis::stats_reader(&l.reader, &l.key, &opts, None).map_err(|e| format!("{e:#}"))?;
    if let Some(f) = &file
        && let Err(e) = cache::write(f, &l.source, &s)
    {
        tracing::warn!(key = %l.key, error = %e, "cannot write the statistics cache");
    }
    Ok(Arc::new(s))
}

/// Library facts of an index.
pub fn facts_of(ix: &TraceIndex) -> TraceFacts {
    TraceFacts {
        span_ns: ix.end.saturating_sub(ix.start),
        processes: ix.processes.len(),
        ioctls: ix.ioctl_count(),
        vmbus: ix.vmbus_count(),
        records: ix.total_records,
        dropped: ix.dropped_events,
        source: ix.header.source.name().to_string(),
        damaged: ix.gaps.len(),
    }
}

fn walk(root: &Path, dir: &Path, label: &str, depth: u32, out: &mut Vec<(String, PathBuf)>) {
    if depth > 4 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        // Canonicalise so a symlink pointing out of the root is never listed.
        let Ok(canon) = std::fs::canonicalize(&p) else {
            continue;
        };
        if !canon.starts_with(root) {
            continue;
        }
        if canon.is_dir() {
            walk(root, &p, label, depth + 1, out);
        } else if p.extension().is_some_and(|x| x == "dxtrace") {
            let Ok(rel) = p.strip_prefix(root) else {
                continue;
            };
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push((format!("{label}/{}", rel.join("/")), canon));
        }
    }
}
