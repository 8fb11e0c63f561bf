//! What the operator commands share: the addresses they act on come from their arguments or,
//! with none (or `-`), from standard input, one per line, so an address need not stand in the
//! shell's history or in the process list; and they print no address back.

use std::io::BufRead;

/// The addresses of `args`, or of `input` (one per line, blank lines skipped) when `args` is
/// empty or `["-"]`.
pub fn addresses(args: Vec<String>, input: impl BufRead) -> std::io::Result<Vec<String>> {
    if !(args.is_empty() || args == ["-"]) {
        return Ok(args);
    }
    let mut addresses = Vec::new();
    for line in input.lines() {
        let line = line?;
        let line = line.trim();
        if !line.is_empty() {
            addresses.push(line.to_owned());
        }
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_win_and_standard_input_is_read_without_them_or_with_a_dash() {
        let input = "ann@example.org\n\n  Bob@Example.org \r\n";
        let from_input = ["ann@example.org", "Bob@Example.org"];
        assert_eq!(
            addresses(vec![], input.as_bytes()).expect("read"),
            from_input
        );
        assert_eq!(
            addresses(vec!["-".into()], input.as_bytes()).expect("read"),
            from_input
        );
        assert_eq!(
            addresses(vec!["carl@example.org".into()], input.as_bytes()).expect("read"),
            ["carl@example.org"]
        );
    }
}
