//! What canaryd must know about how Prometheus scrapes: the scrape interval (globally and
//! per template), which decides the shortest analysis interval that still sees a scrape in
//! every interval and the range gauges are read over.

use std::collections::BTreeMap;
use std::time::Duration;

/// Scrapes per gauge range: a gauge read over fewer scrapes is one noisy reading.
pub const GAUGE_SCRAPES: u32 = 4;

/// The scrape interval of the series behind each template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrapeIntervals {
    /// The interval of every template not listed in `by_template` (and of inline queries).
    pub default: Duration,
    /// Templates whose series are scraped at another interval (e.g. cAdvisor at 60 s).
    pub by_template: BTreeMap<String, Duration>,
}

impl Default for ScrapeIntervals {
    /// 30 s: the prometheus-operator default, and so the most common one in clusters.
    fn default() -> Self {
        ScrapeIntervals { default: Duration::from_secs(30), by_template: BTreeMap::new() }
    }
}

impl ScrapeIntervals {
    /// One interval for every template.
    pub fn uniform(interval: Duration) -> Self {
        ScrapeIntervals { default: interval, by_template: BTreeMap::new() }
    }

    /// The scrape interval of `template` (`None`: an inline query).
    pub fn of(&self, template: Option<&str>) -> Duration {
        template.and_then(|t| self.by_template.get(t)).copied().unwrap_or(self.default)
    }

    /// The range a gauge of `template` is read over for an analysis interval `window`:
    /// the window, but at least [`GAUGE_SCRAPES`] scrapes.
    pub fn gauge_range(&self, template: Option<&str>, window: Duration) -> Duration {
        window.max(self.of(template) * GAUGE_SCRAPES)
    }

    /// Why an analysis interval is too short for `template`'s scrape interval, if it is.
    /// An interval shorter than the scrape interval holds no scrape at all in many of its
    /// turns: each of those would be an interval without data.
    pub fn interval_problem(&self, template: Option<&str>, interval: Duration) -> Option<String> {
        let scrape = self.of(template);
        (interval < scrape).then(|| {
            let what = template.map_or("inline queries".to_string(), |t| format!("template {t}"));
            format!(
                "{} is shorter than the {} scrape interval of {what}: many intervals would hold no scrape and have no data; the smallest interval that works is {}",
                humantime::format_duration(interval),
                humantime::format_duration(scrape),
                humantime::format_duration(scrape)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_shorter_than_the_scrape_is_refused_with_the_smallest_that_works() {
        let s = ScrapeIntervals::uniform(Duration::from_secs(60));
        let why = s.interval_problem(Some("http-error-rate"), Duration::from_secs(30)).unwrap();
        assert!(why.contains("30s is shorter than the 1m scrape interval"), "{why}");
        assert!(why.ends_with("the smallest interval that works is 1m"), "{why}");
        assert_eq!(s.interval_problem(Some("http-error-rate"), Duration::from_secs(60)), None);
        let default = ScrapeIntervals::default();
        assert_eq!(default.interval_problem(Some("http-error-rate"), Duration::from_secs(30)), None);
    }

    #[test]
    fn gauges_are_read_over_at_least_four_scrapes() {
        let mut s = ScrapeIntervals::uniform(Duration::from_secs(15));
        s.by_template.insert("container-memory".into(), Duration::from_secs(60));
        assert_eq!(s.gauge_range(Some("container-cpu"), Duration::from_secs(30)), Duration::from_secs(60));
        assert_eq!(s.gauge_range(Some("container-cpu"), Duration::from_secs(300)), Duration::from_secs(300));
        assert_eq!(
            s.gauge_range(Some("container-memory"), Duration::from_secs(30)),
            Duration::from_secs(240)
        );
    }
}
