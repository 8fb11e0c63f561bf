//! The result table: every figure next to the limit measured in the same run, their ratio,
//! the target and whether it was met. Printed as text and written as markdown.

use std::fmt::Write as _;

/// What a row's checked value must satisfy.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// checked ≥ x
    AtLeast(f64),
    /// checked < x
    Below(f64),
    /// lo ≤ checked ≤ hi
    Within(f64, f64),
    /// checked == x (counts)
    Exactly(f64),
    /// No target: context for the other rows.
    Info,
}

/// One line of the table.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub section: &'static str,
    pub figure: String,
    pub measured: String,
    pub limit: String,
    /// Shown in the ratio column.
    pub ratio: Option<f64>,
    /// The value the target applies to (often the ratio).
    pub checked: Option<f64>,
    pub target: Target,
    pub target_text: String,
}

impl Row {
    pub(crate) fn new(section: &'static str, figure: impl Into<String>) -> Self {
        Self {
            section,
            figure: figure.into(),
            measured: String::new(),
            limit: "—".into(),
            ratio: None,
            checked: None,
            target: Target::Info,
            target_text: "—".into(),
        }
    }

    pub(crate) fn measured(mut self, text: impl Into<String>) -> Self {
        self.measured = text.into();
        self
    }

    pub(crate) fn limit(mut self, text: impl Into<String>) -> Self {
        self.limit = text.into();
        self
    }

    /// Sets the ratio column and checks the target against it.
    pub(crate) fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = Some(ratio);
        self.checked = Some(ratio);
        self
    }

    /// Checks the target against `value` instead of the ratio.
    pub(crate) fn checked(mut self, value: f64) -> Self {
        self.checked = Some(value);
        self
    }

    pub(crate) fn target(mut self, target: Target, text: impl Into<String>) -> Self {
        self.target = target;
        self.target_text = text.into();
        self
    }

    /// A row for a section that could not be measured.
    pub(crate) fn failed(section: &'static str, error: &anyhow::Error) -> Self {
        let text = format!("{error:#}").replace(['\n', '|'], " ");
        let mut row = Self::new(section, "section failed").measured(text);
        row.target_text = "runs".into();
        row.target = Target::Exactly(1.0);
        row.checked = Some(0.0);
        row
    }

    /// `Some(true)` met, `Some(false)` missed, `None` no target.
    pub(crate) fn verdict(&self) -> Option<bool> {
        let v = self.checked?;
        let ok = match self.target {
            Target::AtLeast(x) => v >= x,
            Target::Below(x) => v < x,
            Target::Within(lo, hi) => (lo..=hi).contains(&v),
            Target::Exactly(x) => (v - x).abs() < 1e-9,
            Target::Info => return None,
        };
        Some(ok && v.is_finite())
    }

    fn verdict_text(&self) -> &'static str {
        match self.verdict() {
            Some(true) => "pass",
            Some(false) => "MISS",
            None => "info",
        }
    }

    fn ratio_text(&self) -> String {
        self.ratio.map_or_else(|| "—".into(), |r| format!("{r:.2}"))
    }
}

/// Facts about the run printed above the table.
pub(crate) struct RunInfo {
    pub date: String,
    pub commit: String,
    pub machine: String,
    pub services: String,
    pub load_before: String,
    pub load_after: String,
    pub wall: std::time::Duration,
}

/// The table as aligned text for the terminal.
pub(crate) fn text_table(rows: &[Row]) -> String {
    let header = [
        "#",
        "section",
        "figure",
        "measured",
        "limit (same run)",
        "ratio",
        "target",
        "",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            [
                (i + 1).to_string(),
                r.section.to_owned(),
                r.figure.clone(),
                r.measured.clone(),
                r.limit.clone(),
                r.ratio_text(),
                r.target_text.clone(),
                r.verdict_text().to_owned(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cols: &[String]| {
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            let pad = w - c.chars().count();
            let _ = write!(
                out,
                "{}{c}{}",
                if i == 0 { "" } else { "  " },
                " ".repeat(pad)
            );
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    };
    line(&mut out, &header.map(str::to_owned));
    line(&mut out, &widths.map(|w| "-".repeat(w)));
    for row in &cells {
        line(&mut out, row);
    }
    out
}

/// The run as markdown (what goes into BENCHMARKS.md).
pub(crate) fn markdown(info: &RunInfo, rows: &[Row]) -> String {
    let mut out = String::new();
    let secs = info.wall.as_secs();
    let _ = writeln!(
        out,
        "Run of {} at commit `{}`; `bench all` took {}m{:02}s.\n",
        info.date,
        info.commit,
        secs / 60,
        secs % 60
    );
    let _ = writeln!(out, "- machine: {}", info.machine);
    let _ = writeln!(out, "- services: {}", info.services);
    let _ = writeln!(
        out,
        "- load average (1, 5, 15 min) before the run: {}; after: {}\n",
        info.load_before, info.load_after
    );
    out.push_str(
        "| # | section | figure | measured | limit (same run) | ratio | target | result |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|\n");
    for (i, r) in rows.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            i + 1,
            r.section,
            r.figure,
            r.measured,
            r.limit,
            r.ratio_text(),
            r.target_text,
            match r.verdict() {
                Some(true) => "pass",
                Some(false) => "**miss**",
                None => "info",
            }
        );
    }
    out
}

/// Replaces the text between `<!-- bench:begin -->` and `<!-- bench:end -->` in `path`.
pub(crate) fn update_file(path: &std::path::Path, content: &str) -> anyhow::Result<()> {
    const BEGIN: &str = "<!-- bench:begin -->";
    const END: &str = "<!-- bench:end -->";
    let text = std::fs::read_to_string(path)?;
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        anyhow::bail!("{} has no {BEGIN} … {END} markers", path.display());
    };
    anyhow::ensure!(b < e, "{END} comes before {BEGIN}");
    let updated = format!("{}{BEGIN}\n{content}{}", &text[..b], &text[e..]);
    std::fs::write(path, updated)?;
    Ok(())
}
