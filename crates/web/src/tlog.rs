//! The transparency log over HTTP (C2SP tlog-tiles layout, hash tiles
//! only): `GET /log/checkpoint` (the signed note, `text/plain`) and
//! `GET /log/tile/L/N[.p/W]` (hash tiles of height 8). Public even with a
//! tenants file: a checkpoint and hashes say how many proofs were signed,
//! nothing about whose. Entry bundles (`/log/tile/entries/...`) are not
//! served: a leaf is a whole `statement.dsse.json`, which can exceed the
//! bundles' 64 KiB entry limit; the entries are the proofs themselves.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use proof_tlog::Published;

async fn checkpoint(State(log): State<Arc<Published>>) -> Response {
    match tokio::task::spawn_blocking(move || log.checkpoint()).await {
        Ok(Ok(note)) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            note,
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn tile(State(log): State<Arc<Published>>, Path(rest): Path<String>) -> Response {
    let path = format!("tile/{rest}");
    match tokio::task::spawn_blocking(move || log.tile(&path)).await {
        Ok(Some(bytes)) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            bytes,
        )
            .into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            "no such hash tile (tile/L/N[.p/W], height 8, within the current tree; entry bundles are not served)\n",
        )
            .into_response(),
    }
}

/// The `/log/...` routes for `log`.
pub fn router(log: Arc<Published>) -> Router {
    Router::new()
        .route("/log/checkpoint", get(checkpoint))
        .route("/log/tile/{*rest}", get(tile))
        .with_state(log)
}
