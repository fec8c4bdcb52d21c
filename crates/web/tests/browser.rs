//! The HTML pages in headless Chromium: the list renders (with each row's
//! signed proof state) and links to the invocation page, which renders the
//! proof status from the signed proof, the client's claims, diagnosis, KPIs
//! and the SVG charts; screenshots of both pages are written to
//! target/web-screenshots/ (list.png, invocation.png).
//!
//! Chromium is required: without it this test fails (it does not skip).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn chromium() -> PathBuf {
    let candidates = [
        std::env::var_os("CHROMIUM").map(PathBuf::from),
        Some(PathBuf::from("/usr/bin/chromium")),
        Some(PathBuf::from("/usr/bin/chromium-browser")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "chromium is not installed (looked at $CHROMIUM, /usr/bin/chromium, /usr/bin/chromium-browser); \
install it with `bash tests/rig/install-deps.sh` (it installs Debian's chromium) and rerun"
            )
        })
}

/// Runs headless Chromium with a fresh profile; returns stdout.
fn run_chromium(args: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).unwrap();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium {args:?} exited with {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// The href of the invocation link whose text is `id`.
fn href_for(dom: &str, id: &str) -> String {
    let marker = format!("<code>{id}</code></a>");
    let end = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("{id} is not linked in the list:\n{dom}"));
    let start = dom[..end]
        .rfind("href=\"")
        .expect("an href before the link text")
        + "href=\"".len();
    let stop = start + dom[start..].find('"').unwrap();
    dom[start..stop].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_render_link_and_screenshot_in_chromium() {
    let s = start().await;
    let base = format!("http://{}", s.addr);

    // The list.
    let url = format!("{base}/invocations");
    let list = tokio::task::spawn_blocking(move || run_chromium(&["--dump-dom".into(), url]))
        .await
        .unwrap();
    assert!(list.contains("<h1>Invocations</h1>"), "{list}");
    for id in [REMOTE_BUILD, REMOTE_TEST, CACHE_HIT, LOCAL_ONLY, FAILING] {
        assert!(list.contains(id), "{id} missing from the list");
    }
    assert!(list.contains("BUILD_FAILURE"));
    assert!(list.contains("data-proof=\"proven\">PROVEN REMOTE</span>"));
    assert!(list.contains("data-proof=\"not proven\">NOT PROVEN</span>"));

    // Follow the list's link to remote-build.
    let href = href_for(&list, REMOTE_BUILD);
    assert_eq!(href, format!("/invocations/{REMOTE_BUILD}"));
    let url = format!("{base}{href}");
    let page = tokio::task::spawn_blocking(move || run_chromium(&["--dump-dom".into(), url]))
        .await
        .unwrap();
    assert!(
        page.contains(&format!("Invocation <code>{REMOTE_BUILD}</code>")),
        "{page}"
    );
    assert!(page.contains(
        "Proof status: <span class=\"badge g\" data-proof=\"proven\">PROVEN REMOTE</span>"
    ));
    assert!(page.contains("id=\"signed-checks\""), "{page}");
    assert!(page.contains(&format!(
        "href=\"/api/v1/invocations/{REMOTE_BUILD}/artifact\""
    )));
    assert!(page.contains("Client's view: what the stream claims"));
    assert!(
        page.contains("<code class=\"cause\">queueing</code>"),
        "{page}"
    );
    assert!(page.contains("50.6%"));
    assert!(page.contains("id=\"kpis\""));
    assert!(page.contains("2830 ms"), "critical path KPI");
    // Both SVG charts, with the 8 remote / 10 internal process mix.
    assert_eq!(page.matches("<svg").count(), 2, "{page}");
    assert!(page.contains("remote: 8"), "{page}");
    assert!(page.contains("internal: 10"));
    assert!(page.contains("queue: 50.64"));
    assert!(page.contains("grpc://127.0.0.1:50051"));

    // The local-only page says why it is not proven.
    let url = format!("{base}/invocations/{LOCAL_ONLY}");
    let local = tokio::task::spawn_blocking(move || run_chromium(&["--dump-dom".into(), url]))
        .await
        .unwrap();
    assert!(local.contains("NOT PROVEN"));
    assert!(local.contains("<code class=\"cause\">eligibility</code>"));

    // Screenshots of the list and of the invocation page.
    let dir = target_dir().join("web-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let list_png = dir.join("list.png");
    let _ = std::fs::remove_file(&list_png);
    let url = format!("{base}/invocations");
    let shot = list_png.clone();
    tokio::task::spawn_blocking(move || {
        run_chromium(&[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,600".into(),
            "--hide-scrollbars".into(),
            url,
        ])
    })
    .await
    .unwrap();
    let bytes = std::fs::read(&list_png)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", list_png.display()));
    assert!(
        bytes.len() > 10_000,
        "list screenshot is only {} bytes",
        bytes.len()
    );
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 1280);
    assert_eq!(u32::from_be_bytes(bytes[20..24].try_into().unwrap()), 600);
    let png = dir.join("invocation.png");
    let _ = std::fs::remove_file(&png);
    let url = format!("{base}/invocations/{REMOTE_BUILD}");
    let shot = png.clone();
    tokio::task::spawn_blocking(move || {
        run_chromium(&[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,1400".into(),
            "--hide-scrollbars".into(),
            url,
        ])
    })
    .await
    .unwrap();
    let bytes =
        std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert!(
        bytes.len() > 10_000,
        "screenshot is only {} bytes",
        bytes.len()
    );
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    // IHDR width and height: 1280 x 1400.
    assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 1280);
    assert_eq!(u32::from_be_bytes(bytes[20..24].try_into().unwrap()), 1400);
}
