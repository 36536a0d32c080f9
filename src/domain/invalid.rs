//! Why a value was refused, and the "did you mean" hint that goes with it. The caller (the policy
//! file reader, the config loader) adds the location.

use std::fmt;

/// Why a value was refused; the caller adds the location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub message: String,
    pub hint: Option<String>,
}

impl Invalid {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Closest match among `choices`, as a hint (`did you mean 'Asia/Shanghai'?`): case-insensitive
/// edit distance (transpositions count as one edit), at most a third of the longer word.
pub fn did_you_mean<'a>(input: &str, choices: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let input_l = input.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for c in choices {
        let d = strsim::damerau_levenshtein(&input_l, &c.to_lowercase());
        let limit = (c.chars().count().max(input.chars().count()) / 3).max(1);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| format!("did you mean '{c}'?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_get_a_hint_and_far_ones_none() {
        let zones = ["Asia/Shanghai", "Europe/Berlin", "UTC"];
        assert_eq!(
            did_you_mean("Asia/Shangai", zones).as_deref(),
            Some("did you mean 'Asia/Shanghai'?")
        );
        assert_eq!(
            did_you_mean("europe/berln", zones).as_deref(),
            Some("did you mean 'Europe/Berlin'?")
        );
        assert_eq!(
            did_you_mean("speach", ["grid", "speech"]).as_deref(),
            Some("did you mean 'speech'?")
        );
        assert_eq!(
            did_you_mean("tiemzone", ["timezone"]).as_deref(),
            Some("did you mean 'timezone'?")
        );
        assert_eq!(did_you_mean("nowhere", zones), None);
    }
}
