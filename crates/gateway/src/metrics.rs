//! Prometheus metrics for the admin listener. Label values are bounded: routes are templates,
//! never raw paths; models are configured names; reasons are a fixed set.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0].into_iter()
}

/// One request in flight; see [`Metrics::request_started`].
#[derive(Debug)]
pub struct InFlight(Gauge<i64, std::sync::atomic::AtomicI64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Histogram>,
    inference_duration: Family<ModelLabels, Histogram>,
    authn_failures: Family<ReasonLabels, Counter>,
    in_flight: Gauge<i64, std::sync::atomic::AtomicI64>,
    models: Gauge<i64, std::sync::atomic::AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route template and status code", requests.clone());
        let request_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register("http_request_duration_seconds", "Time to answer a request", request_duration.clone());
        let inference_duration =
            Family::<ModelLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register(
            "inference_duration_seconds",
            "Time a model took to run, queueing included",
            inference_duration.clone(),
        );
        let authn_failures = Family::<ReasonLabels, Counter>::default();
        registry.register("authn_failures", "Refused credentials by reason", authn_failures.clone());
        let in_flight = Gauge::default();
        registry.register("http_requests_in_flight", "Requests being served now", in_flight.clone());
        let models = Gauge::default();
        registry.register("models_loaded", "Models loaded and checked", models.clone());
        Metrics { registry, requests, request_duration, inference_duration, authn_failures, in_flight, models }
    }

    /// Counts a request in flight until the returned guard drops, which also happens when the
    /// client hangs up and the request's future is dropped.
    pub fn request_started(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    pub fn request_finished(&self, route: &str, code: u16, seconds: f64) {
        self.requests.get_or_create(&RequestLabels { route: route.to_owned(), code }).inc();
        self.request_duration.get_or_create(&RouteLabels { route: route.to_owned() }).observe(seconds);
    }

    pub fn inference(&self, model: &str, seconds: f64) {
        self.inference_duration.get_or_create(&ModelLabels { model: model.to_owned() }).observe(seconds);
    }

    pub fn authn_failure(&self, reason: crate::reason::AuditReason) {
        self.authn_failures.get_or_create(&ReasonLabels { reason: reason.as_str() }).inc();
    }

    pub fn set_models(&self, count: usize) {
        self.models.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
