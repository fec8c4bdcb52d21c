//! Standard output for every command.
//!
//! A reader that goes away (`proof list | head -1`) is not an error: the
//! first write that meets a closed pipe (EPIPE) marks standard output closed,
//! later output is dropped, and the command finishes and exits with its own
//! exit code, quietly. (Rust ignores SIGPIPE, so `println!` would panic with
//! "failed printing to stdout: Broken pipe" instead.) Any other write error
//! ends the process with a message and exit code 2. `print!`/`println!` are
//! denied in this crate (`clippy::print_stdout`): use `out!` and `outln!`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);

/// True once a write met a closed pipe; commands streaming much output may stop early.
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

fn failed(e: std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        CLOSED.store(true, Ordering::Relaxed);
    } else {
        eprintln!("proof: error: cannot write to standard output: {e}");
        std::process::exit(i32::from(crate::EXIT_UNUSABLE));
    }
}

/// Writes formatted text to standard output (see the module docs).
pub fn write_fmt(args: std::fmt::Arguments<'_>) {
    if closed() {
        return;
    }
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        failed(e);
    }
}

/// Flushes standard output (see the module docs).
pub fn flush() {
    if closed() {
        return;
    }
    if let Err(e) = std::io::stdout().lock().flush() {
        failed(e);
    }
}

/// Standard output as a [`Write`] for bulk output (`proof export -o -`), with the
/// same rules: a closed pipe swallows the rest.
pub struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !closed() {
            if let Err(e) = std::io::stdout().lock().write_all(buf) {
                failed(e);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        flush();
        Ok(())
    }
}

/// `print!` to standard output, quiet when the reader has gone.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write_fmt(format_args!($($arg)*))
    };
}

/// `println!` to standard output, quiet when the reader has gone.
macro_rules! outln {
    () => {
        $crate::out::write_fmt(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}
