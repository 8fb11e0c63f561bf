//! HTML escaping for the minijinja templates of both services (pages and emails).
//!
//! minijinja's default HTML escaper also turns `/` into `&#x2f;`, which makes every URL in
//! the source unreadable (`https:&#x2f;&#x2f;…`). This one escapes exactly what HTML needs:
//! `& < > " '`.

use minijinja::{AutoEscape, Output, State, Value};

/// A minijinja formatter: auto-escaped (`.html`) templates get [`escape_html`], the rest the
/// default behaviour.
pub fn format_value(
    out: &mut Output,
    state: &mut State,
    value: &Value,
) -> Result<(), minijinja::Error> {
    if matches!(state.auto_escape(), AutoEscape::Html)
        && !value.is_safe()
        && let Some(text) = value.as_str()
    {
        return Ok(out.write_str(&escape_html(text))?);
    }
    minijinja::escape_formatter(out, state, value)
}

/// Escapes `& < > " '` for HTML text and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#x27;"),
            c => escaped.push(c),
        }
    }
    escaped
}
