//! Event times in microseconds since the Unix epoch, read as the model reads
//! them, for the forms producers commonly write; any other form is left to
//! the model (None).
//!
//! - text: `YYYY-MM-DDTHH:MM:SS`, an optional fraction of 1 to 6 digits, and
//!   `Z` or an offset `+HH:MM` / `-HH:MM`; ASCII digits only, years 1900 to
//!   9000, a real calendar date;
//! - a whole number: seconds up to 2e10, milliseconds beyond (as the model
//!   reads epoch numbers), up to 2e13.

const US_PER_S: i64 = 1_000_000;
const MAX_SECONDS: i64 = 20_000_000_000;
const MAX_MILLIS: i64 = 20_000_000_000_000;

/// Microseconds of an epoch number, if in the range read here.
pub fn number_micros(value: i64) -> Option<i64> {
    if (0..=MAX_SECONDS).contains(&value) {
        Some(value * US_PER_S)
    } else if value > MAX_SECONDS && value < MAX_MILLIS {
        Some(value * 1000)
    } else {
        None
    }
}

/// Microseconds of an ISO-8601 text in the forms named above.
pub fn text_micros(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 {
        return None;
    }
    let second = second_micros(&bytes[..19])?;
    let rest = rest_micros(&bytes[19..])?;
    Some(second + rest)
}

fn digits(bytes: &[u8]) -> Option<i64> {
    let mut value = 0i64;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(b - b'0');
    }
    Some(value)
}

/// "YYYY-MM-DDTHH:MM:SS" read as UTC.
fn second_micros(head: &[u8]) -> Option<i64> {
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(at, sep)| head[at] != sep) {
        return None;
    }
    let year = digits(&head[0..4])?;
    let month = digits(&head[5..7])?;
    let day = digits(&head[8..10])?;
    let hour = digits(&head[11..13])?;
    let minute = digits(&head[14..16])?;
    let second = digits(&head[17..19])?;
    // Far from the calendar's ends, an offset cannot push the time out of it.
    if !(1900..=9000).contains(&year) || !(1..=12).contains(&month) {
        return None;
    }
    if day < 1 || day > days_in_month(year, month) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60 * US_PER_S + second * US_PER_S)
}

/// The fraction minus the UTC offset, in microseconds, of ".123+02:00".
fn rest_micros(rest: &[u8]) -> Option<i64> {
    let mut at = 0;
    let mut micros = 0;
    if rest.first() == Some(&b'.') {
        let end = rest[1..]
            .iter()
            .position(|b| !b.is_ascii_digit())
            .map_or(rest.len(), |p| p + 1);
        let fraction = &rest[1..end];
        if fraction.is_empty() || fraction.len() > 6 {
            return None;
        }
        micros = digits(fraction)? * 10i64.pow(6 - fraction.len() as u32);
        at = end;
    }
    match &rest[at..] {
        [b'Z'] => Some(micros),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2])?;
            let minutes = digits(&[*m1, *m2])?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = (hours * 3600 + minutes * 60) * US_PER_S;
            Some(if *sign == b'+' {
                micros - offset
            } else {
                micros + offset
            })
        }
        _ => None,
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// civil-date algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_741_082_400 * US_PER_S; // 2025-03-04T10:00:00Z

    #[test]
    fn reads_the_usual_forms() {
        assert_eq!(text_micros("2025-03-04T10:00:00Z"), Some(T0));
        assert_eq!(text_micros("2025-03-04T10:00:00.25Z"), Some(T0 + 250_000));
        assert_eq!(
            text_micros("2025-03-04T11:00:00.25+01:00"),
            Some(T0 + 250_000)
        );
        assert_eq!(
            text_micros("2025-03-04T09:00:00.000250-01:00"),
            Some(T0 + 250)
        );
        assert_eq!(
            text_micros("2024-02-29T00:00:00Z"),
            Some(1_709_164_800 * US_PER_S)
        );
        assert_eq!(number_micros(1_741_082_400), Some(T0));
        assert_eq!(number_micros(1_741_082_400_123), Some(T0 + 123_000));
    }

    #[test]
    fn leaves_other_forms_to_the_model() {
        for text in [
            "2025-03-04T10:00:00+0100",
            "2025-03-04T10:00:00z",
            "2025-03-04 10:00:00Z",
            "2025-03-04T10:00:00.1234567Z",
            "2025-03-04T10:00:00.Z",
            "2025-02-30T10:00:00Z",
            "2023-02-29T10:00:00Z",
            "2025-03-04T24:00:00Z",
            "2025-03-04T10:00:60Z",
            "2025-03-04T10:00:00+24:00",
            "1899-12-31T10:00:00Z",
            "2025-03-04T10:00:00",
            "٢٠٢٥-03-04T10:00:00Z",
        ] {
            assert_eq!(text_micros(text), None, "{text}");
        }
        assert_eq!(number_micros(-1), None);
        assert_eq!(number_micros(MAX_MILLIS), None);
    }
}
