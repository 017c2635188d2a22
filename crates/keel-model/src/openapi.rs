//! The REST API's schemas for keel-model's string newtypes (feature `openapi`, which keel-server's
//! OpenAPI description turns on): each is a JSON string, described as its parser holds it.

use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};

macro_rules! string_schema {
    ($t:ty, $desc:literal) => {
        impl utoipa::PartialSchema for $t {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some($desc))
                    .into()
            }
        }

        impl utoipa::ToSchema for $t {}
    };
}

string_schema!(
    crate::Hostname,
    "A hostname: lower-case labels of letters, digits and `-` (RFC 1123), at most 253 characters."
);
string_schema!(
    crate::Mac,
    "A MAC address, answered as `aa:bb:cc:dd:ee:ff` (given as `aa:bb:…`, `AA-BB-…` or `aabb.ccdd.eeff`)."
);
string_schema!(crate::Login, "A login: `^[a-z_][a-z0-9_]{0,30}$`.");
string_schema!(
    crate::ManagerName,
    "A facility's manager: a token's name, or `user:LOGIN` for a user."
);
