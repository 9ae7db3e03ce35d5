//! Durations as the configuration and the CLI write them: a whole number of seconds, minutes,
//! hours or days (`90`, `90s`, `5m`, `1h`, `2d`).
//!
//! Hand-written rather than `humantime`: the settings take exactly one whole number and one unit
//! (so `5 minutes`, `1.5h` and `500ms` are refused with the rule, not read as something else),
//! and [`show`] prints a value in that same syntax, so an error message's value can be pasted back.

use std::time::Duration;

/// Parses `90`, `90s`, `5m`, `1h` or `2d` (a whole number of seconds, minutes, hours or days).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(split) => text.split_at(split),
        None => (text, "s"),
    };
    if number.is_empty() {
        return None;
    }
    let number: u64 = number.parse().ok()?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    number.checked_mul(scale).map(Duration::from_secs)
}

/// A duration as the configuration writes it (`90s`, `5m`, `1h`, `2d`).
pub fn show(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0 => "0s".to_owned(),
        _ if secs.is_multiple_of(86_400) => format!("{}d", secs / 86_400),
        _ if secs.is_multiple_of(3600) => format!("{}h", secs / 3600),
        _ if secs.is_multiple_of(60) => format!("{}m", secs / 60),
        _ => format!("{secs}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_shown() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        for bad in ["", "m", "5x", "-5m", "5.5m", "5 m", "500ms", "99999999999999999999d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(show(Duration::from_secs(360)), "6m");
        assert_eq!(show(Duration::from_secs(61)), "61s");
        assert_eq!(show(Duration::ZERO), "0s");
    }
}
