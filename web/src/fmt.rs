//! Number formatting shared by the pages (the JSON API sends raw numbers).

/// `1.23 ms`, `456 ns`, `2.50 s`.
pub fn ns(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} ns"),
        1_000..1_000_000 => format!("{:.2} µs", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", n as f64 / 1e6),
        _ => format!("{:.2} s", n as f64 / 1e9),
    }
}

/// `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A trace key percent-encoded for one URL path segment (`/` becomes `%2F`).
pub fn enc(key: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.');
    percent_encoding::utf8_percent_encode(key, SET).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        assert_eq!(super::ns(999), "999 ns");
        assert_eq!(super::ns(1_500_000), "1.50 ms");
        assert_eq!(super::bytes(2048), "2.0 KiB");
        assert_eq!(super::enc("samples/a b.dxtrace"), "samples%2Fa%20b.dxtrace");
    }
}
