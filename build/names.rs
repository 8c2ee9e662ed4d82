//! Symbol names as the release layout matches them; shared by `build.rs`,
//! which writes the linker script, and the `relay_instructions` bench,
//! which writes the list and checks what it covers, so both read an entry
//! the same way.

/// `name` without a `.llvm.N` (or the list's `.llvm.*`) suffix: LLVM
/// numbers the functions it made local by their module's contents.
pub fn without_llvm_suffix(name: &str) -> &str {
    match name.rsplit_once(".llvm.") {
        Some((base, n)) if n == "*" || (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) => {
            base
        }
        _ => name,
    }
}
