//! Headless Chromium for the page tests: the DOM after load, and PNG
//! screenshots checked for what they are. Chromium is required: without it
//! a test fails (it does not skip).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn chromium() -> PathBuf {
    [
        std::env::var_os("CHROMIUM").map(PathBuf::from),
        Some(PathBuf::from("/usr/bin/chromium")),
        Some(PathBuf::from("/usr/bin/chromium-browser")),
    ]
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
fn run(args: &[String]) -> String {
    let profile = tempfile::tempdir().expect("a Chromium profile directory");
    let mut child = Command::new(chromium())
        .args([
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
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().expect("chromium stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
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
    reader.join().expect("chromium stdout reader")
}

/// The DOM of `url` after load.
pub fn dom(url: &str) -> String {
    run(&["--dump-dom".into(), url.into()])
}

/// Where screenshots go: `target/web-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("target"));
    let dir = target.join("web-screenshots");
    std::fs::create_dir_all(&dir).expect("create target/web-screenshots");
    dir
}

/// A `width` x `height` screenshot of `url` written to `png`, checked to be
/// a PNG of that size with real content (not a blank page).
pub fn screenshot(url: &str, png: &Path, width: u32, height: u32) {
    let _ = std::fs::remove_file(png);
    run(&[
        format!("--screenshot={}", png.display()),
        format!("--window-size={width},{height}"),
        "--hide-scrollbars".into(),
        url.into(),
    ]);
    let bytes =
        std::fs::read(png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert!(
        bytes.len() > 10_000,
        "{} is only {} bytes",
        png.display(),
        bytes.len()
    );
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        png.display()
    );
    let dim = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    assert_eq!((dim(16), dim(20)), (width, height), "{}", png.display());
}
