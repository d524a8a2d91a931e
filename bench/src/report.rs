//! Result output: a human table, one JSON object per result, and the latency distribution in
//! HdrHistogram's percentile-distribution text format (`.hgrm`, what perf/plot.py draws).

use hdrhistogram::Histogram;

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

/// Nanoseconds (what the load generator records) per millisecond (what an `.hgrm` file shows).
const NS_PER_MS: f64 = 1_000_000.0;

/// `hist` (latencies in nanoseconds) as the text HdrHistogram's `outputPercentileDistribution`
/// writes, values in milliseconds: a header, one row per quantile tick (5 per half distance to
/// 100%: value, percentile, total count to that value, 1/(1-percentile); the 100% row has no
/// last column), then the mean, standard deviation, max, count and histogram layout. Values have
/// 6 decimals rather than the reference's `sigfig`, so that sub-millisecond latencies keep
/// their nanoseconds.
pub fn hgrm(hist: &Histogram<u64>) -> String {
    let ms = |ns: f64| ns / NS_PER_MS;
    let mut out = format!("{:>12} {:>14} {:>10} {:>14}\n\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    let mut total = 0u64;
    for v in hist.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let (value, q) = (ms(v.value_iterated_to() as f64), v.quantile_iterated_to());
        if q < 1.0 {
            out.push_str(&format!("{value:12.6} {q:2.12} {total:10} {:14.2}\n", 1.0 / (1.0 - q)));
        } else {
            out.push_str(&format!("{value:12.6} {q:2.12} {total:10}\n"));
        }
    }
    // Sub-buckets per bucket, as the histogram sizes them: 2 * 10^sigfig rounded up to a power of two.
    let sub_buckets = (2 * 10u32.pow(u32::from(hist.sigfig()))).next_power_of_two();
    out.push_str(&format!("#[Mean    = {:12.6}, StdDeviation   = {:12.6}]\n", ms(hist.mean()), ms(hist.stdev())));
    out.push_str(&format!("#[Max     = {:12.6}, Total count    = {:12}]\n", ms(hist.max() as f64), hist.len()));
    out.push_str(&format!("#[Buckets = {:12}, SubBuckets     = {:12}]\n", hist.buckets(), sub_buckets));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::new_hist;

    /// The rows of an `.hgrm` text, parsed: (value in ms, percentile, total count).
    fn rows(text: &str) -> Vec<(f64, f64, u64)> {
        text.lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                assert!(f.len() == 4 || f.len() == 3, "row {l:?}");
                (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].parse().unwrap())
            })
            .collect()
    }

    /// What `--hgrm` writes reads back as HdrHistogram's format says: the header, rows whose
    /// value and count never go down and whose last percentile is 1.0 with every recorded value
    /// counted, the percentiles matching the histogram's own, then the footer.
    #[test]
    fn hgrm_of_a_known_histogram_parses_back() {
        let mut hist = new_hist();
        // 10,000 latencies: 1 µs to 10 ms in 1 µs steps, plus one 50 ms outlier.
        for us in 1..=10_000u64 {
            hist.record(us * 1000).unwrap();
        }
        hist.record(50_000_000).unwrap();
        let text = hgrm(&hist);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "       Value     Percentile TotalCount 1/(1-Percentile)");
        assert_eq!(lines[1], "");

        let rows = rows(&text);
        assert!(rows.len() > 50, "5 ticks per half distance down to 1 in 10,001: {} rows", rows.len());
        for w in rows.windows(2) {
            assert!(w[0].0 <= w[1].0 && w[0].1 <= w[1].1 && w[0].2 <= w[1].2, "{w:?}");
        }
        let last = rows.last().unwrap();
        assert_eq!((last.1, last.2), (1.0, hist.len()));
        assert!((last.0 - 50.0).abs() < 0.05, "max row {last:?}");
        let median = rows.iter().find(|r| (r.1 - 0.5).abs() < 1e-9).expect("a 50% row");
        let want = hist.value_at_quantile(0.5) as f64 / NS_PER_MS;
        assert!((median.0 - want).abs() <= want * 1e-3, "50% row {median:?}, histogram says {want}");

        let footer: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("#[")).collect();
        assert_eq!(footer.len(), 3);
        assert!(footer[0].starts_with("#[Mean    =") && footer[0].contains(", StdDeviation   ="), "{}", footer[0]);
        assert!(footer[1].ends_with(&format!("Total count    = {:12}]", hist.len())), "{}", footer[1]);
        assert!(footer[2].ends_with("SubBuckets     =         2048]"), "{}", footer[2]);
        assert_eq!(lines.last(), footer.last());
    }
}
