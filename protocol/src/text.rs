//! Making a peer's text safe to print or log: [`display_safe`].
//!
//! Every string that came from the other side (an agent's name, a reject reason, an error
//! message, a sweep id in a log line) may hold terminal control sequences: ESC sequences that set
//! the window title or move the cursor, CR or LF that start a forged line ("all tasks
//! completed"), BEL, C1 controls (a one-byte CSI on some terminals), or Unicode bidi overrides
//! that make a line read differently from what it holds. Printing such a string raw lets the peer
//! write on our terminal. `display_safe` escapes them visibly and bounds the length, so one line
//! from a peer stays one line of ours.

use std::borrow::Cow;

/// Characters of a peer's string shown at most; the rest is cut and counted.
pub const MAX_DISPLAY_CHARS: usize = 4096;

/// Whether `c` must not reach a terminal as it is: C0 controls (including TAB, CR, LF, ESC,
/// BEL), DEL, C1 controls, the Unicode line and paragraph separators, and the bidi embedding,
/// override, isolate and mark characters.
fn needs_escape(c: char) -> bool {
    matches!(
        c,
        '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{061c}'
    )
}

/// `text` as it can be printed or logged: every control character (see above) written as a
/// visible escape (`\n`, `\r`, `\t`, `\x1b`, `\u{202e}`, …) and at most [`MAX_DISPLAY_CHARS`]
/// characters kept (then `…(N more bytes)`). Text with nothing to change is borrowed as it is.
pub fn display_safe(text: &str) -> Cow<'_, str> {
    let long = text.len() > MAX_DISPLAY_CHARS && text.chars().nth(MAX_DISPLAY_CHARS).is_some();
    if !long && !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(MAX_DISPLAY_CHARS * 2) + 16);
    let mut shown_bytes = 0;
    for (n, c) in text.chars().enumerate() {
        if n == MAX_DISPLAY_CHARS {
            break;
        }
        shown_bytes += c.len_utf8();
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    if shown_bytes < text.len() {
        out.push_str(&format!("…({} more bytes)", text.len() - shown_bytes));
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for text in [
            "",
            "gpu-node-3",
            "sweep 2026-01-01_lr é 日本 🚀",
            "C:\\path\\x",
        ] {
            assert!(matches!(display_safe(text), Cow::Borrowed(t) if t == text));
        }
    }

    #[test]
    fn line_breaks_and_terminal_controls_are_escaped_visibly() {
        let forged = "node\r\n\x1b[32mFORGED: all tasks completed\x1b[0m\x07";
        assert_eq!(
            display_safe(forged),
            "node\\r\\n\\x1b[32mFORGED: all tasks completed\\x1b[0m\\x07"
        );
        // A window title: OSC 0 ; title BEL.
        assert_eq!(display_safe("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");
        assert_eq!(display_safe("a\tb\0c\x7f"), "a\\tb\\x00c\\x7f");
    }

    #[test]
    fn c1_controls_bidi_and_separators_are_escaped() {
        // U+009B is a one-character CSI on terminals that honour C1 controls.
        assert_eq!(display_safe("a\u{9b}31m"), "a\\u{9b}31m");
        assert_eq!(display_safe("\u{85}"), "\\u{85}");
        assert_eq!(
            display_safe("x\u{202e}txt.exe\u{2066}\u{2069}\u{200f}\u{61c}"),
            "x\\u{202e}txt.exe\\u{2066}\\u{2069}\\u{200f}\\u{61c}"
        );
        assert_eq!(display_safe("a\u{2028}b\u{2029}"), "a\\u{2028}b\\u{2029}");
    }

    #[test]
    fn every_escaped_form_holds_no_control_character() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let safe = display_safe(&all);
        assert!(!safe.chars().any(needs_escape));
    }

    #[test]
    fn long_text_is_cut_and_says_how_much_is_left() {
        let text = "é".repeat(MAX_DISPLAY_CHARS + 10);
        let safe = display_safe(&text);
        assert!(
            safe.ends_with("…(20 more bytes)"),
            "{}",
            &safe[safe.len() - 30..]
        );
        assert_eq!(
            safe.chars().filter(|&c| c == 'é').count(),
            MAX_DISPLAY_CHARS
        );
        // Exactly at the bound: kept whole.
        let exact = "a".repeat(MAX_DISPLAY_CHARS);
        assert!(matches!(display_safe(&exact), Cow::Borrowed(_)));
        // Many escapes: the bound counts input characters, so the output stays bounded too.
        let bells = "\x07".repeat(MAX_DISPLAY_CHARS * 3);
        let safe = display_safe(&bells);
        assert!(safe.len() <= MAX_DISPLAY_CHARS * 4 + 32, "{}", safe.len());
        assert!(safe.ends_with(&format!("…({} more bytes)", MAX_DISPLAY_CHARS * 2)));
    }
}
