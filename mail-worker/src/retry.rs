//! The retry policy: which delay queue a failed job waits in, with jitter, and the headers
//! that keep its history.

use chrono::{DateTime, Utc};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};

/// Header listing every failed attempt (`attempt N at <time>: <error>`).
pub const HISTORY_HEADER: &str = "x-attempt-history";
/// The most lines the history keeps: the first and the latest. A job that waits through a
/// long outage (backing off to an hour, for as long as its link lives) would otherwise grow
/// its headers without end, and the headers of a message must fit one AMQP frame
/// ([`shared::amqp::FRAME_MAX`]): 20 lines of at most 560 bytes take 11 KB of its 32 KiB.
pub const HISTORY_MAX_LINES: usize = 20;
/// Header with the reason a job was dead-lettered.
pub const DEAD_REASON_HEADER: &str = "x-dead-reason";
/// Header with the time a job was dead-lettered.
pub const DEAD_AT_HEADER: &str = "x-dead-at";

/// Header counting how often a job was put back because a dependency was down.
pub const WAITS_HEADER: &str = "x-waits";

/// Header counting how often a job waited for a send budget (or a throttled domain).
pub const BUDGET_WAITS_HEADER: &str = "x-budget-waits";
/// How often a job of a newer release was left for a worker that knows it.
pub const HELD_HEADER: &str = "x-held-for-newer";

/// How often the job in `headers` has already waited for a send budget.
pub fn budget_waits(headers: Option<&FieldTable>) -> u32 {
    count_header(headers, BUDGET_WAITS_HEADER)
}

/// How often the job in `headers`, of a newer release, was left for a worker that knows it.
pub fn held(headers: Option<&FieldTable>) -> u32 {
    count_header(headers, HELD_HEADER)
}

/// How often the job in `headers` has already waited for a dependency.
pub fn waits(headers: Option<&FieldTable>) -> u32 {
    count_header(headers, WAITS_HEADER)
}

fn count_header(headers: Option<&FieldTable>, name: &str) -> u32 {
    match headers.and_then(|h| h.inner().get(name)) {
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        _ => 0,
    }
}

/// The delay before wait number `wait` (1-based): the retry schedule, then its last step for
/// as long as the outage lasts (the job's own expiry ends the wait at the latest).
pub fn wait_delay(schedule: &[u64], wait: u32) -> u64 {
    let index = usize::try_from(wait.saturating_sub(1)).unwrap_or(usize::MAX);
    schedule
        .get(index)
        .or(schedule.last())
        .copied()
        .unwrap_or(1)
}

/// The delay before retry number `attempt` (1-based), or `None` when the schedule is spent.
pub fn delay_for(schedule: &[u64], attempt: u32) -> Option<u64> {
    let index = usize::try_from(attempt).ok()?.checked_sub(1)?;
    schedule.get(index).copied()
}

/// Per-message TTL in the delay queue: 80–100 % of the queue's delay, placed in that range
/// by `draw` (uniform in `[0, 1)`), so jobs that failed together (an SMTP outage) do not all
/// come back in the same instant. Never above the queue's own TTL, which caps it anyway.
pub fn jittered_expiration_ms(delay_secs: u64, draw: f64) -> u64 {
    let full = delay_secs.saturating_mul(1000);
    let span = full / 5;
    let offset = ((span + 1) as f64 * draw.clamp(0.0, 1.0)) as u64;
    full - span + offset.min(span)
}

/// The headers of a re-published job: the original ones plus one more history line.
pub fn with_history(
    original: Option<&FieldTable>,
    attempt: u32,
    at: DateTime<Utc>,
    error: &str,
) -> FieldTable {
    let mut headers = original.cloned().unwrap_or_default();
    let mut history = history(Some(&headers));
    history.push(format!(
        "attempt {attempt} at {}: {}",
        at.format("%Y-%m-%dT%H:%M:%SZ"),
        cut(error, 500)
    ));
    set_history(&mut headers, history);
    headers
}

/// `headers` with their history within its bounds: a history written by an earlier release
/// (lines cut at 500 characters, any number of them) is cut to this one's on the way out.
pub fn with_bounded_history(mut headers: FieldTable) -> FieldTable {
    if headers.inner().contains_key(HISTORY_HEADER) {
        let history = history(Some(&headers));
        set_history(&mut headers, history);
    }
    headers
}

/// Writes `history` into `headers`: its first line and its latest ones, at most
/// [`HISTORY_MAX_LINES`], each at most [`HISTORY_LINE_MAX_BYTES`].
fn set_history(headers: &mut FieldTable, mut history: Vec<String>) {
    if history.len() > HISTORY_MAX_LINES {
        history.drain(1..=history.len() - HISTORY_MAX_LINES);
    }
    let lines = history
        .iter()
        .map(|line| AMQPValue::LongString(LongString::from(cut(line, HISTORY_LINE_MAX_BYTES))))
        .collect::<Vec<_>>();
    headers.insert(
        HISTORY_HEADER.into(),
        AMQPValue::FieldArray(FieldArray::from(lines)),
    );
}

/// The longest history line in bytes: the attempt, its time and 500 bytes of error.
pub const HISTORY_LINE_MAX_BYTES: usize = 560;

/// `text` cut to at most `max` bytes, at a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The attempt history recorded in `headers`, oldest first.
pub fn history(headers: Option<&FieldTable>) -> Vec<String> {
    match headers.and_then(|h| h.inner().get(HISTORY_HEADER)) {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .filter_map(|v| match v {
                AMQPValue::LongString(s) => Some(s.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A string header's value.
pub fn string_header(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_gives_one_delay_per_retry_then_none() {
        let s = [5, 30, 120];
        assert_eq!(delay_for(&s, 0), None);
        assert_eq!(delay_for(&s, 1), Some(5));
        assert_eq!(delay_for(&s, 3), Some(120));
        assert_eq!(delay_for(&s, 4), None);
    }

    #[test]
    fn waits_back_off_along_the_schedule_and_never_run_out() {
        let s = [5, 30, 120];
        assert_eq!(wait_delay(&s, 1), 5);
        assert_eq!(wait_delay(&s, 3), 120);
        assert_eq!(wait_delay(&s, 4), 120);
        assert_eq!(wait_delay(&s, u32::MAX), 120);
        let mut headers = FieldTable::default();
        assert_eq!(waits(Some(&headers)), 0);
        headers.insert(WAITS_HEADER.into(), AMQPValue::LongUInt(7));
        assert_eq!(waits(Some(&headers)), 7);
        assert_eq!(waits(None), 0);
    }

    #[test]
    fn jitter_stays_between_eighty_and_a_hundred_percent_of_the_delay() {
        for _ in 0..1000 {
            let ms = jittered_expiration_ms(30, rand::random());
            assert!((24_000..=30_000).contains(&ms), "{ms}");
        }
        assert_eq!(jittered_expiration_ms(30, 0.0), 24_000);
        assert_eq!(jittered_expiration_ms(30, 0.5), 27_000);
        assert_eq!(jittered_expiration_ms(30, 0.999_99), 30_000);
        assert_eq!(jittered_expiration_ms(30, 1.0), 30_000);
        assert_eq!(jittered_expiration_ms(0, 0.5), 0);
    }

    #[test]
    fn history_accumulates_across_attempts_and_keeps_other_headers() {
        let mut original = FieldTable::default();
        original.insert("x-request-id".into(), AMQPValue::LongString("r1".into()));
        let at = DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let once = with_history(Some(&original), 1, at, "451 try later");
        let twice = with_history(Some(&once), 2, at, "timed out");
        assert_eq!(
            history(Some(&twice)),
            [
                "attempt 1 at 2026-11-26T10:00:00Z: 451 try later",
                "attempt 2 at 2026-11-26T10:00:00Z: timed out"
            ]
        );
        assert_eq!(
            string_header(Some(&twice), "x-request-id").as_deref(),
            Some("r1")
        );
    }

    #[test]
    fn the_history_keeps_the_first_line_and_the_latest_ones() {
        let at = DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        // Three bytes a character (500 is no multiple of 3): cut by characters, 500 of
        // them would be 1,500 bytes.
        let long_error = "€".repeat(2_000);
        let mut headers = FieldTable::default();
        for attempt in 1..=200 {
            headers = with_history(Some(&headers), attempt, at, &long_error);
        }
        let lines = history(Some(&headers));
        assert_eq!(lines.len(), HISTORY_MAX_LINES);
        assert!(lines[0].starts_with("attempt 1 at"), "{}", &lines[0][..20]);
        assert!(
            lines[1].starts_with("attempt 182 at"),
            "{}",
            &lines[1][..20]
        );
        assert!(
            lines[19].starts_with("attempt 200 at"),
            "{}",
            &lines[19][..20]
        );
        // On the wire each line is a type byte, a 4-byte length and its text: the history
        // takes well under half a frame of the size the connections propose.
        let size: usize = lines.iter().map(|line| 5 + line.len()).sum();
        assert!(size < shared::amqp::FRAME_MAX as usize / 2, "{size} bytes");
        assert!(
            lines
                .iter()
                .all(|line| line.len() <= HISTORY_LINE_MAX_BYTES)
        );
        assert!(lines[19].ends_with('€'), "cut at a character");
    }

    #[test]
    fn a_history_an_earlier_release_wrote_is_cut_to_the_bounds_on_the_way_out() {
        // 100 lines of 2,000 bytes each: no bound before.
        let old: Vec<AMQPValue> = (1..=100)
            .map(|n| {
                AMQPValue::LongString(LongString::from(format!(
                    "attempt {n}: {}",
                    "é".repeat(1_000)
                )))
            })
            .collect();
        let mut headers = FieldTable::default();
        headers.insert(
            HISTORY_HEADER.into(),
            AMQPValue::FieldArray(FieldArray::from(old)),
        );
        headers.insert("x-request-id".into(), AMQPValue::LongString("r1".into()));
        let bounded = with_bounded_history(headers);
        let lines = history(Some(&bounded));
        assert_eq!(lines.len(), HISTORY_MAX_LINES);
        assert!(lines[0].starts_with("attempt 1: "));
        assert!(lines[1].starts_with("attempt 82: "));
        assert!(
            lines
                .iter()
                .all(|line| line.len() <= HISTORY_LINE_MAX_BYTES)
        );
        assert_eq!(
            string_header(Some(&bounded), "x-request-id").as_deref(),
            Some("r1")
        );
        assert!(
            with_bounded_history(FieldTable::default())
                .inner()
                .is_empty()
        );
    }

    #[test]
    fn cut_stops_at_a_character_boundary() {
        assert_eq!(cut("abc", 10), "abc");
        assert_eq!(cut("a€b", 2), "a");
        assert_eq!(cut("a€b", 4), "a€");
        assert_eq!(cut("€", 0), "");
    }
}
