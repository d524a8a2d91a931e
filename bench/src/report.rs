//! Result tables: a human one and one JSON object per result.

use super::LoadResult;

/// One row per result, with ratios to the first row when `baseline` is true.
pub fn table(rows: &[(String, LoadResult)], baseline: bool) -> String {
    let mut out = format!(
        "{:<26} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}{}\n",
        "run",
        "req/s",
        "p50 us",
        "p90 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "errors",
        if baseline { "   vs first" } else { "" }
    );
    let base = rows.first().map(|(_, r)| r.rps());
    for (name, r) in rows {
        out.push_str(&format!(
            "{:<26} {:>11.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>8}",
            name,
            r.rps(),
            r.us(0.5),
            r.us(0.9),
            r.us(0.99),
            r.us(0.999),
            r.max_us(),
            r.error_count()
        ));
        if let (true, Some(b)) = (baseline, base) {
            out.push_str(&format!("   {:>7.3}x", r.rps() / b.max(1e-9)));
        }
        out.push('\n');
    }
    out
}

/// The result as one JSON object (no dependencies; all values are numbers or plain strings).
pub fn json(name: &str, r: &LoadResult) -> String {
    let errors: Vec<String> = r.errors.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!(
        "{{\"name\":\"{}\",\"run\":\"{}\",\"requests\":{},\"seconds\":{:.3},\"rps\":{:.1},\"p50_us\":{:.2},\"p90_us\":{:.2},\"p99_us\":{:.2},\"p999_us\":{:.2},\"max_us\":{:.2},\"errors\":{{{}}},\"error_total\":{}}}",
        name.replace('"', "'"),
        r.spec_label,
        r.requests,
        r.seconds,
        r.rps(),
        r.us(0.5),
        r.us(0.9),
        r.us(0.99),
        r.us(0.999),
        r.max_us(),
        errors.join(","),
        r.error_count()
    )
}
