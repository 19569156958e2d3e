//! `--metrics-addr`: the run's figures in Prometheus text format at `GET /metrics`.

use crate::progress::Progress;
use anyhow::{Context, Result};
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// Binds `addr` (failing the run at once if it cannot) and serves in the background.
pub async fn serve(addr: &str, progress: Progress) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on --metrics-addr {addr}"))?;
    tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let progress = progress.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    progress.snapshot("running").prometheus(),
                )
                    .into_response()
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::warn!("metrics endpoint stopped: {err}");
        }
    });
    Ok(())
}
