//! Prometheus metric families built by hand from values read at scrape time ([`super::state`]):
//! gauges, counters, and histograms from the lock-free histograms the WAL and the node keep.
//! Invariant: a family has at least one series (the text format cannot write an empty one),
//! and a histogram's buckets are cumulative with `+Inf` at least its last bucket.

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use wal::metrics::HistogramSnapshot;

/// A series' labels: (name, value) pairs.
pub(super) type Labels = Vec<(&'static str, String)>;

/// The families of one scrape. A family with no series is left out (the text format has no
/// way to write one).
#[derive(Default)]
pub(super) struct Families(pub(super) Vec<MetricFamily>);

fn label_pairs(labels: Labels) -> Vec<LabelPair> {
    labels
        .into_iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name(name.to_string());
            pair.set_value(value);
            pair
        })
        .collect()
}

impl Families {
    fn push(&mut self, name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) {
        if metrics.is_empty() {
            return;
        }
        let mut family = MetricFamily::default();
        family.set_name(name.to_string());
        family.set_help(help.to_string());
        family.set_field_type(kind);
        family.set_metric(metrics);
        self.0.push(family);
    }

    /// A gauge without labels.
    pub(super) fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.gauges(name, help, [(Vec::new(), value)]);
    }

    /// A gauge, one series per label set.
    pub(super) fn gauges(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        let metrics = series
            .into_iter()
            .map(|(labels, value)| {
                let mut gauge = Gauge::default();
                gauge.set_value(value);
                let mut metric = Metric::from_label(label_pairs(labels));
                metric.set_gauge(gauge);
                metric
            })
            .collect();
        self.push(name, help, MetricType::GAUGE, metrics);
    }

    /// A counter without labels.
    pub(super) fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.counters(name, help, [(Vec::new(), value)]);
    }

    /// A counter, one series per label set.
    pub(super) fn counters(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels, u64)>,
    ) {
        let metrics = series
            .into_iter()
            .map(|(labels, value)| {
                let mut counter = Counter::default();
                counter.set_value(value as f64);
                let mut metric = Metric::from_label(label_pairs(labels));
                metric.set_counter(counter);
                metric
            })
            .collect();
        self.push(name, help, MetricType::COUNTER, metrics);
    }

    /// A histogram, one series per label set, from power-of-two histograms whose
    /// observations are multiplied by `scale` (1e-6 turns microseconds into seconds).
    pub(super) fn histograms<'a>(
        &mut self,
        name: &str,
        help: &str,
        scale: f64,
        series: impl IntoIterator<Item = (Labels, &'a HistogramSnapshot)>,
    ) {
        let metrics = series
            .into_iter()
            .map(|(labels, snapshot)| {
                let mut cumulative = 0;
                // The overflow bucket (no bound) is the `+Inf` one the encoder writes from
                // the count.
                let buckets = snapshot
                    .buckets
                    .iter()
                    .filter_map(|(bound, count)| {
                        cumulative += count;
                        let bound = (*bound)?;
                        let mut bucket = Bucket::default();
                        bucket.set_upper_bound(bound as f64 * scale);
                        bucket.set_cumulative_count(cumulative);
                        Some(bucket)
                    })
                    .collect();
                let mut histogram = Histogram::default();
                histogram.set_bucket(buckets);
                // The count is read after the buckets: an observation recorded in between
                // may be in one and not the other, and `+Inf` must not fall below a bucket.
                histogram.set_sample_count(snapshot.count.max(cumulative));
                histogram.set_sample_sum(snapshot.sum as f64 * scale);
                let mut metric = Metric::from_label(label_pairs(labels));
                metric.set_histogram(histogram);
                metric
            })
            .collect();
        self.push(name, help, MetricType::HISTOGRAM, metrics);
    }
}
