//! Instruction flags (`--from`, `--chown`, `--chmod`, `--interval`, ...) checked once at parse
//! time so a typo fails with the instruction's position, not halfway through a build.

use std::time::Duration;

/// Flags of `COPY` and `ADD`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CopyFlags {
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
}

impl CopyFlags {
    pub fn parse(
        flags: impl Iterator<Item = (String, Option<String>)>,
        instruction: &str,
    ) -> Result<Self, String> {
        let mut out = CopyFlags::default();
        for (name, value) in flags {
            let slot = match name.as_str() {
                "from" if instruction == "COPY" => &mut out.from,
                "chown" => &mut out.chown,
                "chmod" => &mut out.chmod,
                "link" => continue,
                _ => return Err(format!("unknown flag: --{name} for {instruction}")),
            };
            *slot = Some(value.ok_or_else(|| format!("--{name} needs a value"))?);
        }
        if let Some(mode) = &out.chmod {
            u32::from_str_radix(mode, 8)
                .map_err(|_| format!("invalid --chmod value `{mode}` (octal mode expected)"))?;
        }
        Ok(out)
    }

    /// The octal `--chmod` mode, already validated by `parse`.
    pub fn mode(&self) -> Option<u32> {
        self.chmod.as_deref().and_then(|m| u32::from_str_radix(m, 8).ok())
    }
}

/// `HEALTHCHECK` options, as the image config stores them (nanoseconds; zero means "inherit").
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthcheckFlags {
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub retries: Option<u32>,
}

impl HealthcheckFlags {
    pub fn parse(flags: impl Iterator<Item = (String, Option<String>)>) -> Result<Self, String> {
        let mut out = HealthcheckFlags::default();
        for (name, value) in flags {
            let value = value.ok_or_else(|| format!("--{name} needs a value"))?;
            match name.as_str() {
                "interval" => out.interval = Some(go_duration(&value)?),
                "timeout" => out.timeout = Some(go_duration(&value)?),
                "start-period" => out.start_period = Some(go_duration(&value)?),
                "retries" => {
                    out.retries = Some(value.parse().map_err(|_| format!("invalid --retries `{value}`"))?)
                }
                _ => return Err(format!("unknown flag: --{name} for HEALTHCHECK")),
            }
        }
        Ok(out)
    }
}

/// Parses Go's duration syntax (`1m30s`, `500ms`, `2h`), which Docker uses for these flags.
pub fn go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration `{text}`");
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_nanos((total * 1e9).round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(go_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(go_duration("5").is_err());
        assert!(go_duration("5x").is_err());
    }

    #[test]
    fn copy_flags_are_checked() {
        let f = |v: &[(&str, &str)]| {
            v.iter().map(|(k, v)| (k.to_string(), Some(v.to_string()))).collect::<Vec<_>>()
        };
        assert_eq!(CopyFlags::parse(f(&[("chmod", "755")]).into_iter(), "COPY").unwrap().mode(), Some(0o755));
        assert!(CopyFlags::parse(f(&[("chmod", "9x")]).into_iter(), "COPY").is_err());
        assert!(CopyFlags::parse(f(&[("from", "a")]).into_iter(), "ADD").is_err());
    }
}
