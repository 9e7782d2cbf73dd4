//! Pieces every subcommand of the command line tool shares: where it writes, and how it
//! reads numbers.
//!
//! # Writing to a closed pipe
//!
//! Rust starts every program with `SIGPIPE` ignored, so a write to a pipe whose reader has
//! exited (`attention-layout inspect nemotron-h-8b --rust | head -1`) fails with `EPIPE`,
//! and `println!` turns that failure into a panic. The tool therefore never uses the print
//! macros (the crate denies `clippy::print_stdout` and `clippy::print_stderr`): every
//! subcommand, progress display and error message included, writes through a [`Console`],
//! whose first write to a closed pipe ends the process at once with status
//! [`CLOSED_PIPE_STATUS`] and nothing printed. That is what a shell reports for a Unix tool
//! killed by `SIGPIPE`, so scripts see the truncated run as they see `yes | head -1`.
//!
//! Restoring the default `SIGPIPE` disposition at startup would have the same effect, but
//! through an `unsafe` call into libc (a new dependency, and `unsafe` outside the small
//! owning types it is kept to), on Unix only, with a status that tests can only read as
//! a signal. The writer keeps the decision in safe, portable code. Other write errors (a
//! full disk) are returned to the caller.
//!
//! # Numbers
//!
//! Negative numbers are values, not options: `--rate -3` reaches the check that refuses
//! it with the project's message. Whole-number options read through [`whole`], which says
//! what was wrong with `-3` instead of clap's `invalid digit found in string`.

use std::io::{self, Write};

/// Exit status after a write to a closed pipe: 128 + `SIGPIPE` (13), the status a shell
/// gives a process that `SIGPIPE` killed.
pub const CLOSED_PIPE_STATUS: u8 = 141;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Out,
    Err,
}

/// Standard output or standard error; see [the module documentation](self#writing-to-a-closed-pipe).
#[derive(Debug)]
pub struct Console(Stream);

/// Standard output.
pub fn stdout() -> Console {
    Console(Stream::Out)
}

/// Standard error.
pub fn stderr() -> Console {
    Console(Stream::Err)
}

/// Ends the process with [`CLOSED_PIPE_STATUS`] if `result` is a closed pipe; returns it
/// otherwise. `process::exit` flushes what standard output still buffers (and ignores a
/// failure to) before the process ends.
fn quit_if_closed<T>(result: io::Result<T>) -> io::Result<T> {
    if let Err(e) = &result
        && e.kind() == io::ErrorKind::BrokenPipe
    {
        std::process::exit(i32::from(CLOSED_PIPE_STATUS));
    }
    result
}

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        quit_if_closed(match self.0 {
            Stream::Out => io::stdout().write(buf),
            Stream::Err => io::stderr().write(buf),
        })
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // One lock for the whole buffer, so concurrent writers do not interleave within it.
        quit_if_closed(match self.0 {
            Stream::Out => io::stdout().lock().write_all(buf),
            Stream::Err => io::stderr().lock().write_all(buf),
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        quit_if_closed(match self.0 {
            Stream::Out => io::stdout().flush(),
            Stream::Err => io::stderr().flush(),
        })
    }
}

/// Writes `error: {message}` and a newline to standard error (a closed pipe ends the
/// process; other failures are ignored, as there is nowhere left to report them).
pub fn error(message: impl std::fmt::Display) {
    let _ = writeln!(stderr(), "error: {message}");
}

/// Parses a whole number for a command line option (`value_parser = console::whole::<u64>`):
/// a negative one is refused by name rather than as a bad digit.
pub fn whole<T: std::str::FromStr<Err = std::num::ParseIntError>>(s: &str) -> Result<T, String> {
    let t = s.trim();
    t.parse::<T>().map_err(|e| {
        if t.starts_with('-') && t.get(1..).is_some_and(|d| d.parse::<u128>().is_ok()) {
            format!("must not be negative, got {t}")
        } else {
            format!("expected a whole number, got `{t}` ({e})")
        }
    })
}
