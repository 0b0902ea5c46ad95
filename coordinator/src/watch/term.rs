//! The terminal under `sweep watch`: the alternate screen with the cursor hidden, keys read one
//! at a time without echo, whole frames drawn in one write, the size, and the terminal put back
//! as it was on every way out (return, error, panic, SIGTERM/SIGHUP/SIGINT).
//!
//! Plain ANSI and termios through libc (already a dependency) rather than a terminal crate:
//! the view needs five escape sequences and one termios change.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// Enter the alternate screen, hide the cursor, clear.
const ENTER: &str = "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J";
/// Show the cursor, leave the alternate screen (the shell's screen comes back as it was).
const LEAVE: &str = "\x1b[?25h\x1b[?1049l";

/// Whether the screen is ours to give back.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The terminal settings before we changed them (`None`: stdin is not a terminal).
static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);
/// The last terminating signal received while the screen was ours (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static PANIC_HOOK: Once = Once::new();

extern "C" fn on_signal(signal: libc::c_int) {
    // Only an atomic store: async-signal-safe. The loop sees it when `poll` returns EINTR.
    SIGNAL.store(signal, Ordering::SeqCst);
}

/// Why [`Screen::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The time is up: read the sweep again.
    Tick,
    /// The terminal's size changed: draw again.
    Resized,
    /// `q`, `Q` or Ctrl-D.
    Quit,
    /// Ctrl-C.
    Interrupt,
    /// A terminating signal (SIGTERM, SIGHUP, SIGINT from `kill`).
    Signalled,
}

/// The terminal while `sweep watch` draws on it; dropping it gives the terminal back.
pub struct Screen {
    /// Keys are read from stdin only when it is a terminal still open.
    keys: bool,
    size: (usize, usize),
}

impl Screen {
    /// Takes the terminal: no echo or line editing on stdin (when it is a terminal; Ctrl-C
    /// arrives as a key), the alternate screen with no cursor, a panic hook that gives the
    /// terminal back before the message is printed, and handlers for terminating signals.
    pub fn enter() -> io::Result<Screen> {
        use std::io::IsTerminal;
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        let keys = io::stdin().is_terminal();
        if keys {
            // SAFETY: tcgetattr fills the zeroed termios we own; tcsetattr reads it.
            let mut settings: libc::termios = unsafe { std::mem::zeroed() };
            if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut settings) } != 0 {
                return Err(io::Error::last_os_error());
            }
            *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(settings);
            let mut raw = settings;
            raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
            raw.c_iflag &= !(libc::IXON | libc::ICRNL);
            raw.c_cc[libc::VMIN] = 0;
            raw.c_cc[libc::VTIME] = 0;
            if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        ACTIVE.store(true, Ordering::SeqCst);
        SIGNAL.store(0, Ordering::SeqCst);
        for signal in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGQUIT] {
            // SAFETY: a handler that only stores an atomic; no SA_RESTART, so `poll` returns
            // EINTR and the loop notices at once.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
        }
        write_all(ENTER)?;
        Ok(Screen { keys, size: size() })
    }

    /// Draws `rows` over the previous frame in one write: each row from the home position,
    /// the rest of its line erased, then everything below the last row erased. Nothing is
    /// cleared first, so nothing flickers.
    pub fn draw(&mut self, rows: &[String]) -> io::Result<()> {
        let mut out = String::from("\x1b[H");
        for (n, row) in rows.iter().enumerate() {
            if n > 0 {
                out.push_str("\r\n");
            }
            out.push_str(row);
            out.push_str("\x1b[K");
        }
        out.push_str("\x1b[J");
        self.size = size();
        write_all(&out)
    }

    /// The size the last frame was drawn for.
    pub fn size(&self) -> (usize, usize) {
        self.size
    }

    /// Waits up to `timeout` for a key, a resize or a signal.
    pub fn wait(&mut self, timeout: Duration) -> Wake {
        let deadline = Instant::now() + timeout;
        loop {
            if SIGNAL.load(Ordering::SeqCst) != 0 {
                return Wake::Signalled;
            }
            if size() != self.size {
                return Wake::Resized;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Wake::Tick;
            }
            // Short naps: a resize is noticed within 100 ms without a SIGWINCH handler.
            let nap = left.min(Duration::from_millis(100));
            if !self.keys {
                std::thread::sleep(nap);
                continue;
            }
            let mut fd = libc::pollfd {
                fd: libc::STDIN_FILENO,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd we own.
            let ready = unsafe { libc::poll(&mut fd, 1, nap.as_millis() as libc::c_int) };
            if ready <= 0 {
                continue;
            }
            let mut buf = [0u8; 64];
            // SAFETY: reading into a buffer we own, at most its length.
            let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
            if n == 0 || (n < 0 && fd.revents & (libc::POLLHUP | libc::POLLERR) != 0) {
                // The terminal went away: stop reading it (the sweep's end or a signal ends us).
                self.keys = false;
                continue;
            }
            let keys = &buf[..n.max(0) as usize];
            if keys.contains(&0x03) {
                return Wake::Interrupt;
            }
            if keys.iter().any(|b| matches!(b, b'q' | b'Q' | 0x04)) {
                return Wake::Quit;
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Gives the terminal back: cursor shown, the shell's screen, the saved settings. Does
/// nothing when it was given back already, so every way out may call it.
pub fn restore() {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    let _ = write_all(LEAVE);
    if let Some(settings) = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take() {
        // SAFETY: the settings tcgetattr gave us.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &settings);
        }
    }
    for signal in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGQUIT] {
        // SAFETY: back to the default disposition.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
}

/// The terminating signal received while the screen was ours, if any.
pub fn signal_received() -> Option<i32> {
    Some(SIGNAL.load(Ordering::SeqCst)).filter(|&s| s != 0)
}

/// Columns and rows of the terminal on stdout (80x24 when it cannot be read).
pub fn size() -> (usize, usize) {
    // SAFETY: TIOCGWINSZ writes a winsize into the zeroed struct we own.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 && size.ws_row > 0 {
        (size.ws_col as usize, size.ws_row as usize)
    } else {
        (80, 24)
    }
}

/// Straight to the file descriptor, so a frame goes out in one `write` (std's stdout is line
/// buffered and would write it row by row); nothing else is printed while the screen is ours.
fn write_all(text: &str) -> io::Result<()> {
    io::stdout().lock().flush()?;
    let mut bytes = text.as_bytes();
    while !bytes.is_empty() {
        // SAFETY: writing from a buffer we own, at most its length.
        let n = unsafe { libc::write(libc::STDOUT_FILENO, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}
