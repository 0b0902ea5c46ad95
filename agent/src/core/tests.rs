//! Unit tests of the core without IO: commands in, decisions out, virtual time.

use super::*;

#[test]
fn sweep_ids_must_be_one_safe_component() {
    for ok in ["sweep_20250101_120000", "a", "x-1.2"] {
        assert!(valid_sweep_id(ok), "{ok}");
    }
    for bad in [
        "",
        ".",
        "..",
        "../x",
        "a/b",
        ".hidden",
        "a\0b",
        "a b",
        &"x".repeat(129),
    ] {
        assert!(!valid_sweep_id(bad), "{bad:?}");
    }
}

#[test]
fn task_dirs_have_at_least_three_digits() {
    assert_eq!(task_dir_name(7), "task_007");
    assert_eq!(task_dir_name(1234), "task_1234");
}
