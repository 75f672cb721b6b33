//! Order statistics of measured durations for the benchmark tables: the median, the 90th
//! percentile and the worst of a set of runs. Pure: it reads no clock and sorts its own copy.
//!
//! Percentiles are nearest-rank: the `p`th percentile of `n` values is the value of rank
//! `ceil(p × n / 100)` in ascending order, always one of the measured values (no interpolation
//! between two runs that both happened). The median is the 50th percentile by the same rule.

use std::time::Duration;

/// The spread of a set of durations; `None` of [`Spread::of`] when there are none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    pub count: usize,
    pub median: Duration,
    pub p90: Duration,
    pub worst: Duration,
}

impl Spread {
    pub fn of(values: &[Duration]) -> Option<Spread> {
        let mut sorted = values.to_vec();
        sorted.sort();
        Some(Spread {
            count: sorted.len(),
            median: nearest_rank(&sorted, 50)?,
            p90: nearest_rank(&sorted, 90)?,
            worst: *sorted.last()?,
        })
    }
}

/// The `percent`th percentile (1..=100) of `sorted` (ascending) by nearest rank.
pub fn nearest_rank<T: Copy>(sorted: &[T], percent: usize) -> Option<T> {
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// Milliseconds with one decimal, `–` for nothing.
pub fn ms(value: Option<Duration>) -> String {
    match value {
        Some(d) => format!("{:.1} ms", d.as_secs_f64() * 1000.0),
        None => "–".into(),
    }
}

/// `hav / reference` with two decimals, `–` where the reference is zero (nothing to compare to).
pub fn ratio(hav: f64, reference: f64) -> String {
    if reference > 0.0 {
        format!("{:.2}", hav / reference)
    } else {
        "–".into()
    }
}

/// The median of `values` (nearest rank, NaN never counted); `None` when there are none.
pub fn median_f64(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    nearest_rank(&sorted, 50)
}

/// `hav / reference` of paired measurements (the same windows of time): the median of the
/// per-pair ratios, with two decimals; pairs with a zero reference are left out, and `–` is
/// printed when none is left or the lengths differ. From four pairs on, the middle half of the
/// ratios follows in brackets (the 25th to the 75th percentile, nearest rank): how far one
/// round's host noise moves the figure.
pub fn paired_ratio(hav: &[f64], reference: &[f64]) -> String {
    if hav.len() != reference.len() {
        return "–".into();
    }
    let mut ratios: Vec<f64> = hav
        .iter()
        .zip(reference)
        .filter(|(_, r)| **r > 0.0)
        .map(|(h, r)| h / r)
        .filter(|ratio| !ratio.is_nan())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let Some(median) = nearest_rank(&ratios, 50) else {
        return "–".into();
    };
    match (ratios.len() >= 4)
        .then(|| Some((nearest_rank(&ratios, 25)?, nearest_rank(&ratios, 75)?)))
        .flatten()
    {
        Some((low, high)) => format!("{median:.2} ({low:.2}–{high:.2})"),
        None => format!("{median:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn nearest_rank_picks_a_measured_value() {
        let ten = millis(&[10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
        assert_eq!(nearest_rank(&ten, 50), Some(Duration::from_millis(50)));
        assert_eq!(nearest_rank(&ten, 90), Some(Duration::from_millis(90)));
        assert_eq!(nearest_rank(&ten, 100), Some(Duration::from_millis(100)));
        assert_eq!(nearest_rank(&ten, 1), Some(Duration::from_millis(10)));
        assert_eq!(nearest_rank::<u8>(&[], 50), None);
    }

    #[test]
    fn the_spread_sorts_its_input_and_names_the_worst() {
        let spread = Spread::of(&millis(&[41, 35, 90, 38, 37])).expect("five values");
        assert_eq!(spread.count, 5);
        assert_eq!(spread.median, Duration::from_millis(38));
        assert_eq!(spread.p90, Duration::from_millis(90));
        assert_eq!(spread.worst, Duration::from_millis(90));
        let one = Spread::of(&millis(&[7])).expect("one value");
        assert_eq!(
            (one.median, one.p90, one.worst),
            (one.worst, one.worst, one.worst)
        );
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn ratios_print_with_two_decimals_and_never_divide_by_zero() {
        assert_eq!(ratio(3.0, 4.0), "0.75");
        assert_eq!(ratio(3.0, 0.0), "–");
    }

    #[test]
    fn paired_ratios_take_the_median_window_by_window() {
        // A noisy second window moves both alike: its ratio is the same as the others'.
        assert_eq!(paired_ratio(&[1.0, 4.0, 1.1], &[2.0, 8.0, 2.0]), "0.50");
        assert_eq!(paired_ratio(&[1.0, 2.0], &[0.0, 4.0]), "0.50");
        assert_eq!(paired_ratio(&[1.0], &[0.0]), "–");
        assert_eq!(paired_ratio(&[1.0, 2.0], &[1.0]), "–");
        // From four pairs on, the middle half of the ratios: here 0.8, 0.9, 1.0, 1.1, 1.3.
        assert_eq!(
            paired_ratio(&[0.9, 1.3, 0.8, 1.1, 1.0], &[1.0; 5]),
            "1.00 (0.90–1.10)"
        );
        assert_eq!(median_f64(&[3.0, f64::NAN, 1.0, 2.0]), Some(2.0));
        assert_eq!(median_f64(&[]), None);
    }

    #[test]
    fn milliseconds_print_with_one_decimal() {
        assert_eq!(ms(Some(Duration::from_micros(36_260))), "36.3 ms");
        assert_eq!(ms(None), "–");
    }
}
