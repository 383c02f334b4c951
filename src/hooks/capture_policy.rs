//! The capture policy hook: what the layer keeps of one exchange, decided once
//! on the request path ([`CapturePolicy`], from a [`CaptureRequest`]), and the
//! plan the middleware follows from it ([`BodyPlan`]).

use std::cell::OnceCell;
use std::sync::Arc;
use std::time::Duration;

use http::{Extensions, HeaderMap, Method, Uri};

use super::{IdentifyConsumer, RequestInfo};

/// The capture policy hook of a layer.
pub(crate) type PolicyFn = Arc<dyn Fn(&CaptureRequest<'_>) -> CapturePolicy + Send + Sync>;

/// Which bodies a [`CapturePolicy`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Bodies {
    /// The request body and the response body (the default).
    #[default]
    Both,
    /// The request body only.
    RequestOnly,
    /// The response body only.
    ResponseOnly,
    /// Neither: the record keeps both bodies' sizes, not their bytes.
    Neither,
}

impl Bodies {
    fn request(self) -> bool {
        matches!(self, Self::Both | Self::RequestOnly)
    }

    fn response(self) -> bool {
        matches!(self, Self::Both | Self::ResponseOnly)
    }
}

/// What the layer keeps of one exchange: whether it is recorded at all, and
/// which of its bodies are stored, always or only when something happened.
/// The [`capture_policy`](crate::UsageLayer::capture_policy) hook returns
/// one per request.
///
/// [`CapturePolicy::new`] (the default) is what the layer does without a
/// hook: every exchange recorded, both bodies kept (up to
/// [`max_body_bytes`](crate::UsageLayer::max_body_bytes)).
///
/// A policy never changes what the record counts: a record is made for every
/// exchange it does not [`skip`](Self::skip), with its status, duration and
/// both bodies' sizes, so the summary's counts, bytes and latencies stay
/// exact. Only the bytes of a body are withheld, and the record says so
/// ([`CaptureNotes::request_body_policy`](crate::CaptureNotes::request_body_policy),
/// [`response_body_policy`](crate::CaptureNotes::response_body_policy)), so a
/// body withheld by policy is never mistaken for an empty one.
///
/// # When a body is kept
///
/// A body on a side that [`bodies`](Self::bodies) keeps is stored when no
/// *trigger* is set, or when any trigger set fires:
///
/// | trigger | fires when |
/// |---|---|
/// | [`bodies_on_error`](Self::bodies_on_error) | the status is 400 or more, the exchange did not complete ([`Outcome`](crate::Outcome) other than `complete`), or a gRPC status other than `OK` |
/// | [`bodies_when_slower_than(d)`](Self::bodies_when_slower_than) | the exchange took `d` or more ([`duration_us`](crate::UsageRecord::duration_us): arrival to the end of the response body) |
/// | [`sample_bodies(n)`](Self::sample_bodies) | this request drew 1 in `n` (at random, decided when it arrives) |
///
/// So `.bodies_on_error().sample_bodies(100)` keeps the bodies of every error
/// and of about one in a hundred other exchanges.
///
/// # Cost
///
/// A body withheld whatever happens (a side [`bodies`](Self::bodies) leaves
/// out, or a request that drew no sample when sampling is the only trigger)
/// is not teed at all: its frames pass with only their sizes counted, and
/// nothing is copied. With an error or a duration trigger, the layer keeps
/// its references to the frames as usual (no copy) until the exchange ends,
/// and copies the bytes only when a trigger fired.
///
/// ```
/// use std::time::Duration;
/// use tower_usage::{Bodies, CapturePolicy};
///
/// let everything = CapturePolicy::new();
/// assert!(everything.is_recorded());
/// let health = CapturePolicy::skip();
/// assert!(!health.is_recorded());
/// let uploads = CapturePolicy::new().bodies(Bodies::ResponseOnly);
/// let search = CapturePolicy::new()
///     .bodies_on_error()
///     .bodies_when_slower_than(Duration::from_millis(500))
///     .sample_bodies(100);
/// # let _ = (uploads, search);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CapturePolicy {
    record: bool,
    bodies: Bodies,
    on_error: bool,
    slower_than: Option<Duration>,
    /// 0: no sampling trigger; else 1 in this many.
    sample: u32,
}

impl Default for CapturePolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl CapturePolicy {
    /// Record the exchange with both bodies, always: what the layer does
    /// without a policy.
    pub const fn new() -> Self {
        Self {
            record: true,
            bodies: Bodies::Both,
            on_error: false,
            slower_than: None,
            sample: 0,
        }
    }

    /// Do not record the exchange, nor tee its bodies (as
    /// [`skip_if`](crate::UsageLayer::skip_if)): it is not counted anywhere.
    pub const fn skip() -> Self {
        Self {
            record: false,
            ..Self::new()
        }
    }

    /// Which bodies are kept (when a [trigger](Self#when-a-body-is-kept)
    /// allows). Default: [`Bodies::Both`].
    pub const fn bodies(mut self, bodies: Bodies) -> Self {
        self.bodies = bodies;
        self
    }

    /// Keep the bodies when the exchange is an error: a status of 400 or
    /// more, an exchange that did not complete, or a gRPC status other than
    /// `OK`. A [trigger](Self#when-a-body-is-kept); default: not set.
    pub const fn bodies_on_error(mut self) -> Self {
        self.on_error = true;
        self
    }

    /// Keep the bodies when the exchange took `threshold` or more. A
    /// [trigger](Self#when-a-body-is-kept); default: not set.
    pub const fn bodies_when_slower_than(mut self, threshold: Duration) -> Self {
        self.slower_than = Some(threshold);
        self
    }

    /// Keep the bodies of 1 in `one_in` requests, drawn at random when each
    /// arrives (so a consumer's or a route's rate is its own when the hook
    /// returns a different `one_in` for it). A
    /// [trigger](Self#when-a-body-is-kept); default: not set. `0` and `1`
    /// keep every request's bodies, as no trigger does.
    pub const fn sample_bodies(mut self, one_in: u32) -> Self {
        self.sample = one_in;
        self
    }

    /// Whether the exchange is recorded (not [`skip`](Self::skip)ped).
    pub const fn is_recorded(&self) -> bool {
        self.record
    }
}

/// The request as the [`capture_policy`](crate::UsageLayer::capture_policy)
/// hook sees it: its head ([`info`](Self::info)), its route template, and
/// its consumer.
///
/// ```
/// use tower_usage::{CapturePolicy, CaptureRequest, IdentifyConsumer, RequestInfo};
///
/// fn policy(req: &CaptureRequest<'_>) -> CapturePolicy {
///     match req.route() {
///         Some("/health") => CapturePolicy::skip(),
///         _ if req.consumer().is_none() => CapturePolicy::new().bodies_on_error(),
///         _ => CapturePolicy::new(),
///     }
/// }
///
/// let req = http::Request::get("/health").body(()).unwrap();
/// let identify = IdentifyConsumer::bearer();
/// let view = CaptureRequest::new(RequestInfo::from_request(&req), Some("/health"), &identify);
/// assert_eq!(policy(&view), CapturePolicy::skip());
/// ```
#[derive(Debug)]
pub struct CaptureRequest<'a> {
    info: RequestInfo<'a>,
    route: Option<&'a str>,
    identify: &'a IdentifyConsumer,
    consumer: OnceCell<Option<String>>,
}

impl<'a> CaptureRequest<'a> {
    /// A view of a request, its route template, and how its consumer is
    /// derived (the layer's [`identify_consumer`](crate::UsageLayer::identify_consumer)).
    pub fn new(
        info: RequestInfo<'a>,
        route: Option<&'a str>,
        identify: &'a IdentifyConsumer,
    ) -> Self {
        Self {
            info,
            route,
            identify,
            consumer: OnceCell::new(),
        }
    }

    /// The request's head: method, URI, headers, extensions.
    pub fn info(&self) -> RequestInfo<'a> {
        self.info
    }

    /// The request method.
    pub fn method(&self) -> &'a Method {
        self.info.method()
    }

    /// The request URI, as the client sent it.
    pub fn uri(&self) -> &'a Uri {
        self.info.uri()
    }

    /// The request headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.info.headers()
    }

    /// The request extensions.
    pub fn extensions(&self) -> &'a Extensions {
        self.info.extensions()
    }

    /// The route template (from the layer's [`route`](crate::UsageLayer::route)
    /// hook), as the record will have it.
    pub fn route(&self) -> Option<&'a str> {
        self.route
    }

    /// The consumer, as the record will have it; `None` for an anonymous
    /// request. Derived on the first call (for the default bearer
    /// derivation, a cached hash of the token), and handed on to the record,
    /// so it is derived once either way.
    pub fn consumer(&self) -> Option<&str> {
        self.consumer
            .get_or_init(|| self.identify.identify(self.info))
            .as_deref()
    }

    /// The consumer, when [`consumer`](Self::consumer) derived it.
    pub(crate) fn into_consumer(self) -> Option<Option<String>> {
        self.consumer.into_inner()
    }
}

/// A side of the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Request,
    Response,
}

const ERROR: u8 = 1;
const SLOW: u8 = 1 << 1;
const SAMPLE: u8 = 1 << 2;

/// What the record says of a body withheld by a policy with these triggers
/// (indexed by the trigger bits): which triggers keep a body, none of which
/// fired. `off` for a side the policy leaves out.
const REASONS: [&str; 8] = [
    "off",
    "error",
    "slow",
    "error|slow",
    "sample",
    "error|sample",
    "slow|sample",
    "error|slow|sample",
];

/// How an exchange ended, as the triggers read it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ending {
    pub(crate) error: bool,
    pub(crate) duration_us: u64,
}

/// A policy as the middleware follows it for one request, the sample drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyPlan {
    request: bool,
    response: bool,
    /// The triggers set ([`ERROR`], [`SLOW`], [`SAMPLE`]); 0: always.
    triggers: u8,
    /// This request drew the sample.
    sampled: bool,
    slower_than_us: u64,
}

impl BodyPlan {
    /// Both bodies, always: the plan without a policy.
    pub(crate) const ALL: Self = Self {
        request: true,
        response: true,
        triggers: 0,
        sampled: false,
        slower_than_us: 0,
    };

    /// The plan of a policy for one request: the sample is drawn here.
    pub(crate) fn of(policy: &CapturePolicy) -> Self {
        let mut triggers = 0;
        if policy.on_error {
            triggers |= ERROR;
        }
        if policy.slower_than.is_some() {
            triggers |= SLOW;
        }
        let sampled = match policy.sample {
            0 => false,
            1 => return Self::everything(policy),
            n => {
                triggers |= SAMPLE;
                fastrand::u32(..n) == 0
            }
        };
        Self {
            request: policy.bodies.request(),
            response: policy.bodies.response(),
            triggers,
            sampled,
            slower_than_us: policy
                .slower_than
                .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        }
    }

    /// A policy whose sample takes every request: no trigger can withhold.
    fn everything(policy: &CapturePolicy) -> Self {
        Self {
            request: policy.bodies.request(),
            response: policy.bodies.response(),
            ..Self::ALL
        }
    }

    fn on(&self, side: Side) -> bool {
        match side {
            Side::Request => self.request,
            Side::Response => self.response,
        }
    }

    /// Whether the side's bytes are teed as they pass: `false` when they are
    /// withheld whatever happens (the side is off, or sampling is the only
    /// trigger and this request did not draw it).
    pub(crate) fn tees(&self, side: Side) -> bool {
        self.on(side) && (self.triggers & !SAMPLE != 0 || self.triggers == 0 || self.sampled)
    }

    /// Whether a body is kept whatever happens (no trigger): the ending need
    /// not be read.
    pub(crate) fn keeps_all(&self) -> bool {
        self.request && self.response && (self.triggers == 0 || self.sampled)
    }

    /// Why the side's body is withheld, once the exchange ended; `None` when
    /// it is kept.
    pub(crate) fn withheld(&self, side: Side, ending: Ending) -> Option<&'static str> {
        if !self.on(side) {
            return Some(REASONS[0]);
        }
        let fired = self.triggers == 0
            || self.sampled
            || (self.triggers & ERROR != 0 && ending.error)
            || (self.triggers & SLOW != 0 && ending.duration_us >= self.slower_than_us);
        (!fired).then_some(REASONS[usize::from(self.triggers)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK_FAST: Ending = Ending {
        error: false,
        duration_us: 10,
    };

    #[test]
    fn without_triggers_a_kept_side_is_kept_and_teed() {
        let plan = BodyPlan::of(&CapturePolicy::new().bodies(Bodies::RequestOnly));
        assert!(plan.tees(Side::Request) && !plan.tees(Side::Response));
        assert_eq!(plan.withheld(Side::Request, OK_FAST), None);
        assert_eq!(plan.withheld(Side::Response, OK_FAST), Some("off"));
        assert_eq!(BodyPlan::of(&CapturePolicy::new()), BodyPlan::ALL);
        assert!(BodyPlan::ALL.keeps_all());
        assert_eq!(
            BodyPlan::of(&CapturePolicy::new().sample_bodies(1)),
            BodyPlan::ALL
        );
    }

    #[test]
    fn triggers_keep_a_body_when_any_fires_and_name_themselves_when_none_does() {
        let policy = CapturePolicy::new()
            .bodies_on_error()
            .bodies_when_slower_than(Duration::from_millis(5));
        let plan = BodyPlan::of(&policy);
        assert!(plan.tees(Side::Response), "the ending decides: teed");
        assert!(!plan.keeps_all());
        assert_eq!(plan.withheld(Side::Response, OK_FAST), Some("error|slow"));
        let error = Ending {
            error: true,
            ..OK_FAST
        };
        assert_eq!(plan.withheld(Side::Response, error), None);
        let slow = Ending {
            duration_us: 5_000,
            ..OK_FAST
        };
        assert_eq!(plan.withheld(Side::Request, slow), None);
    }

    #[test]
    fn a_sample_alone_tees_only_the_requests_that_drew_it() {
        let plans: Vec<BodyPlan> = (0..4000)
            .map(|_| BodyPlan::of(&CapturePolicy::new().sample_bodies(4)))
            .collect();
        let drawn = plans.iter().filter(|p| p.tees(Side::Request)).count();
        // 1 in 4 of 4000: 1000, and 5 standard deviations (27) either way.
        assert!((860..1140).contains(&drawn), "{drawn}");
        for plan in &plans {
            let kept = plan.withheld(Side::Response, OK_FAST).is_none();
            assert_eq!(kept, plan.tees(Side::Response));
            if !kept {
                assert_eq!(plan.withheld(Side::Response, OK_FAST), Some("sample"));
            }
        }
        // With an error trigger too, every request is teed: the ending decides.
        let plan = BodyPlan::of(&CapturePolicy::new().sample_bodies(1000).bodies_on_error());
        assert!(plan.tees(Side::Request));
    }
}
