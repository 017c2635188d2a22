//! A router that remembers its paths: every `route` is recorded as it is added, so
//! [`crate::finish`] can list every path the application serves. The authorization matrix
//! test walks that list (never a hand-written one): a new route without a line in
//! `docs/security.md` fails it.

use axum::routing::MethodRouter;
use axum::Router;

pub struct Recorded<S> {
    router: Router<S>,
    prefix: &'static str,
    paths: Vec<String>,
}

impl<S: Clone + Send + Sync + 'static> Recorded<S> {
    /// A router whose paths will be served under `prefix` (where it is nested).
    pub fn new(prefix: &'static str) -> Self {
        Self {
            router: Router::new(),
            prefix,
            paths: Vec::new(),
        }
    }

    pub fn route(mut self, path: &str, method_router: MethodRouter<S>) -> Self {
        self.paths.push(format!("{}{path}", self.prefix));
        self.router = self.router.route(path, method_router);
        self
    }

    /// A service under `path` and everything below it (recorded as `path/{*rest}`).
    pub fn nest_service<T>(mut self, path: &str, service: T) -> Self
    where
        T: tower::Service<axum::extract::Request, Error = std::convert::Infallible> + Clone + Send + Sync + 'static,
        T::Response: axum::response::IntoResponse,
        T::Future: Send + 'static,
    {
        self.paths.push(format!("{}{path}/{{*rest}}", self.prefix));
        self.router = self.router.nest_service(path, service);
        self
    }

    /// An API router nested at `prefix`, its paths recorded from its OpenAPI description (the
    /// description's paths are relative to `prefix`, its server URL).
    pub fn nest_documented(mut self, prefix: &str, router: Router<S>, doc: &utoipa::openapi::OpenApi) -> Self {
        self.paths
            .extend(doc.paths.paths.keys().map(|p| format!("{}{prefix}{p}", self.prefix)));
        self.router = self.router.nest(prefix, router);
        self
    }

    /// `other`'s routes beside these (same prefix).
    pub fn merge(mut self, other: Recorded<S>) -> Self {
        self.paths.extend(other.paths);
        self.router = self.router.merge(other.router);
        self
    }

    /// Layers, fallbacks: whatever changes the router but adds no path.
    pub fn map(mut self, f: impl FnOnce(Router<S>) -> Router<S>) -> Self {
        self.router = f(self.router);
        self
    }

    /// The same routes with their state given (so that routers of different states can be merged).
    pub fn with_state<S2>(self, state: S) -> Recorded<S2> {
        Recorded {
            router: self.router.with_state(state),
            prefix: self.prefix,
            paths: self.paths,
        }
    }

    pub fn into_parts(self) -> (Router<S>, Vec<String>) {
        (self.router, self.paths)
    }
}
