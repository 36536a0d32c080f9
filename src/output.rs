//! Plain-text tables and CSV for the CLI's data output (stdout).

use std::fmt::Write as _;

/// Columns aligned with two spaces; the header underlined with dashes.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut parts = Vec::new();
        for (i, c) in cells.enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            parts.push(format!("{c:<w$}"));
        }
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(&mut out, &mut headers.iter().copied());
    line(
        &mut out,
        &mut widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    );
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

/// RFC 4180 CSV: fields with commas, quotes or line breaks are quoted.
pub fn csv(headers: &[&str], rows: &[Vec<String>]) -> String {
    let field = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        headers.iter().map(|h| field(h)).collect::<Vec<_>>().join(",")
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{}",
            row.iter().map(|c| field(c)).collect::<Vec<_>>().join(",")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(&["a", "long"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "a    long\n---  ----\nxyz  1\n");
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let c = csv(&["x", "y"], &[vec!["a,b".into(), "say \"hi\"".into()]]);
        assert_eq!(c, "x,y\n\"a,b\",\"say \"\"hi\"\"\"\n");
    }
}
