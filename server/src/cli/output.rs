//! How results are shown: aligned tables with colored states for people, JSON for scripts.

use console::{Style, measure_text_width, pad_str};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned tables and short messages.
    #[default]
    Human,
    /// The server's JSON answer, one document on stdout.
    Json,
}

/// A table rendered with every column as wide as its widest cell.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self { header: header.iter().map(|h| h.to_uppercase()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| measure_text_width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(measure_text_width(cell));
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| pad_str(c, widths[i], console::Alignment::Left, None).into_owned())
                .collect();
            padded.join("  ").trim_end().to_owned() + "\n"
        };
        let bold = Style::new().bold();
        let header: Vec<String> = self.header.iter().map(|h| bold.apply_to(h).to_string()).collect();
        std::iter::once(line(&header)).chain(self.rows.iter().map(|r| line(r))).collect()
    }
}

/// Prints `value` as JSON, or `human()` as text.
pub fn emit(format: OutputFormat, value: &Value, human: impl FnOnce() -> String) {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(value).unwrap_or_default()),
        OutputFormat::Human => print!("{}", human()),
    }
}

/// A build state or health status, colored by what it means for a person on call.
pub fn state(text: &str) -> String {
    let style = match text {
        "healthy" | "succeeded" => Style::new().green(),
        "degraded" | "failed" | "missing" | "cancelled" => Style::new().red().bold(),
        "progressing" | "running" | "queued" => Style::new().yellow(),
        "suspended" | "skipped" | "unknown" => Style::new().dim(),
        _ => Style::new(),
    };
    style.apply_to(text).to_string()
}

/// A field of a JSON object as text (strings bare, absent as `-`).
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM` UTC.
pub fn time(ms: &Value) -> String {
    let Some(ms) = ms.as_i64() else { return "-".into() };
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", rest / 3600, rest % 3600 / 60)
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A byte count with a binary unit.
pub fn bytes(n: &Value) -> String {
    let Some(n) = n.as_u64() else { return "-".into() };
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut size = n as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < units.len() {
        size /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{size:.1} {}", units[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns_whatever_the_colors() {
        console::set_colors_enabled(true);
        let mut table = Table::new(&["app", "status"]);
        table.row(vec!["shop".into(), state("healthy")]);
        table.row(vec!["a-long-app".into(), state("degraded")]);
        let text = console::strip_ansi_codes(&table.render()).into_owned();
        assert_eq!(text, "APP         STATUS\nshop        healthy\na-long-app  degraded\n");
    }

    #[test]
    fn values_read_as_text() {
        assert_eq!(time(&json!(0)), "1970-01-01 00:00");
        assert_eq!(time(&json!(1_767_225_600_000i64)), "2026-01-01 00:00");
        assert_eq!(bytes(&json!(1536)), "1.5 KiB");
        assert_eq!(bytes(&json!(12)), "12 B");
        assert_eq!(text(&json!(null)), "-");
        assert_eq!(text(&json!("x")), "x");
    }
}
