//! `ApiError`: the one error type of the HTTP layer, turned into a response in one place.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel_model::wire::RpcReply;
use keel_model::{ValidationError, ValidationErrors};
use keel_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{}", .0.first().map(ToString::to_string).unwrap_or_default())]
    Invalid(Vec<ValidationError>),
    #[error("authentication required: {0}")]
    Unauthorized(&'static str),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("the record is at version {current}; re-read it and retry (If-Match said {expected})")]
    PreconditionFailed { expected: u64, current: u64 },
    /// A presence rule refuses the login (423, with a code and the reason to show at the machine).
    #[error("{0}")]
    Refused(keel_model::Refusal),
    #[error("too many wrong passwords: try again in {0} s")]
    TooManyAttempts(u64),
    #[error("too many requests from this address: try again in {0} s")]
    RateLimited(u64),
    #[error("If-Match is required: send the version (ETag) you read; * is not accepted")]
    PreconditionRequired,
    /// A feature switched off in this server's configuration.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request was understood but its work failed (e.g. a generator), for reasons shown.
    #[error("failed: {0}")]
    Failed(String),
    /// Details are logged, never shown.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![ValidationError::new(field, message)])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Refused(_) => StatusCode::LOCKED,
            Self::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Self::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            Self::TooManyAttempts(_) | Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Failed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn log(&self) {
        match self {
            Self::Internal(detail) => tracing::error!(%detail, "internal error"),
            Self::Unauthorized(_) | Self::Forbidden(_) => keel_limits::refused!(WARN, error = %self, "refused"),
            _ => {}
        }
    }

    /// The same error in the prologin RPC shape, `{"type":"exception",…}`.
    pub fn into_rpc_response(self) -> Response {
        self.log();
        let exn_type = match &self {
            Self::Invalid(_) => "ValueError",
            Self::Unauthorized(_) | Self::Forbidden(_) | Self::TooManyAttempts(_) | Self::RateLimited(_) => {
                "PermissionError"
            }
            Self::NotFound(_) => "KeyError",
            Self::Conflict(_) | Self::PreconditionFailed { .. } | Self::PreconditionRequired | Self::Refused(_) => {
                "ValueError"
            }
            Self::Internal(_) | Self::Unavailable(_) | Self::Failed(_) => "RuntimeError",
        };
        let reply = RpcReply::Exception {
            exn_type: exn_type.into(),
            exn_message: self.to_string(),
        };
        (self.status(), Json(reply)).into_response()
    }
}

/// The body of every error answer of the REST API (its OpenAPI description's `ErrorBody`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong, in words.
    error: String,
    /// The first invalid field (400).
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    /// Every invalid field (400), each with its line in an import.
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<Vec<ValidationError>>,
    /// Why a session is refused (423): `unknown_machine`, `unknown_user`, `not_a_user_machine`,
    /// `logged_in_elsewhere`, `machine_in_use`, `recovering`, `proof_needed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let status = self.status();
        let invalid = match &self {
            Self::Invalid(errors) => Some(errors),
            _ => None,
        };
        let body = ErrorBody {
            error: self.to_string(),
            field: invalid.and_then(|e| e.first()).map(|e| e.field.clone()),
            errors: invalid.cloned(),
            reason: match &self {
                Self::Refused(r) => Some(r.code().to_owned()),
                _ => None,
            },
        };
        let mut resp = (status, Json(body)).into_response();
        if let Self::TooManyAttempts(secs) | Self::RateLimited(secs) = &self {
            if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::Invalid(vec![e])
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(e: ValidationErrors) -> Self {
        Self::Invalid(e.0)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(v) => Self::Invalid(vec![v]),
            StoreError::InvalidMany(v) => Self::Invalid(v.0),
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::Forbidden(why) => Self::Forbidden(why),
            StoreError::VersionMismatch { expected, current } => Self::PreconditionFailed { expected, current },
            StoreError::Conflict(what) => Self::Conflict(what),
            StoreError::Refused(r) => Self::Refused(r),
            other => Self::Internal(other.to_string()),
        }
    }
}
