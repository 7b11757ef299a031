//! The dxtrace web UI: an axum server with askama pages and a JSON API over a set of
//! `.dxtrace` files.
//!
//! * [`app`] builds the router over an [`AppState`] (tests drive it without a socket);
//! * [`serve`] checks the paths, binds, indexes every trace in the background and serves
//!   until Ctrl-C — `dxtrace serve` and `dxtrace demo` are one call to it;
//! * [`index`] is the per-trace index (columns per lane, level-of-detail summaries),
//!   [`query`] answers timeline, search, detail and comparison questions from it;
//! * [`routes`] lists every page and API route, and the request limits;
//! * [`cache`] keeps indexes and statistics on disk across restarts, [`replay`] runs
//!   replays against the emulator in the background.
//!
//! Only files under the served paths are read: requests name traces by keys that are
//! checked and canonicalised ([`AppState::resolve`]).

#![warn(missing_docs)]

pub mod cache;
pub mod error;
pub mod fmt;
pub mod index;
pub mod listener;
pub mod pages;
pub mod query;
pub mod replay;
pub mod routes;
pub mod state;

use std::net::SocketAddr;

use listener::IdleTimeoutListener;

pub use error::AppError;
pub use routes::app;
pub use state::{AppState, ServeOptions};

/// Errors of [`serve`].
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A path could not be served.
    #[error("cannot serve the given paths")]
    Paths(#[source] AppError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("server error")]
    Io(#[source] std::io::Error),
}

/// A bound server, not yet serving (lets a caller print the URL, or a test learn the
/// ephemeral port, before [`Bound::run`]).
pub struct Bound {
    listener: tokio::net::TcpListener,
    state: AppState,
}

impl Bound {
    /// The server state (e.g. to load a trace before serving).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until `shutdown` resolves; indexes every trace in the background meanwhile.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let st = self.state.clone();
        tokio::spawn(async move { st.index_all().await });
        let listener = IdleTimeoutListener::new(self.listener, self.state.idle_timeout());
        axum::serve(listener, app(self.state))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServeError::Io)
    }
}

/// Checks the paths and binds `addr` (port 0 picks a free port).
pub async fn bind(opts: &ServeOptions, addr: SocketAddr) -> Result<Bound, ServeError> {
    let state = AppState::new(opts).map_err(ServeError::Paths)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    Ok(Bound { listener, state })
}

/// Serves `opts.paths` on `addr` until Ctrl-C, printing the URL to stderr.
pub async fn serve(opts: ServeOptions, addr: SocketAddr) -> Result<(), ServeError> {
    let b = bind(&opts, addr).await?;
    eprintln!(
        "dxtrace: serving on http://{}/ (Ctrl-C to stop)",
        b.local_addr()
    );
    b.run(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

#[cfg(test)]
mod tests;
