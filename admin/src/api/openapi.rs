//! The OpenAPI 3.1 document, built from the same calls that build the router: a route cannot be
//! served without being documented. Schemas come from the request and response types
//! (`schemars`, JSON Schema 2020-12, which OpenAPI 3.1 uses as is).

use axum::handler::Handler;
use axum::routing::MethodRouter;
use axum::Router;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::AdminState;

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Public,
    /// Any signed-in, active user (scoped to what is theirs).
    User,
    /// Administrators; others get 404.
    Admin,
}

/// One documented operation.
#[derive(Debug, Clone)]
pub struct Operation {
    /// HTTP method, upper-case.
    pub method: &'static str,
    /// Path under `/api/v1`, with `{param}`s.
    pub path: &'static str,
    /// One line.
    pub summary: &'static str,
    /// Group.
    pub tag: &'static str,
    /// Who.
    pub access: Access,
    /// Success status.
    pub status: u16,
    request: Option<Value>,
    response: Option<Value>,
}

/// The router and its document, built together.
pub struct Api {
    /// The `/api/v1` routes.
    pub router: Router<AdminState>,
    /// Every operation.
    pub operations: Vec<Operation>,
    generator: SchemaGenerator,
}

/// A handler bound to its HTTP method, made by [`get`], [`post`], [`put`], [`patch`] or
/// [`delete`]: the method is written once per route, and both the router and the document take it
/// from here.
pub(crate) struct Route {
    method: &'static str,
    router: MethodRouter<AdminState>,
}

/// A `GET` route (axum also answers `HEAD` with it).
pub(crate) fn get<H: Handler<T, AdminState>, T: 'static>(handler: H) -> Route {
    Route {
        method: "GET",
        router: axum::routing::get(handler),
    }
}

/// A `POST` route.
pub(crate) fn post<H: Handler<T, AdminState>, T: 'static>(handler: H) -> Route {
    Route {
        method: "POST",
        router: axum::routing::post(handler),
    }
}

/// A `PUT` route.
pub(crate) fn put<H: Handler<T, AdminState>, T: 'static>(handler: H) -> Route {
    Route {
        method: "PUT",
        router: axum::routing::put(handler),
    }
}

/// A `PATCH` route.
pub(crate) fn patch<H: Handler<T, AdminState>, T: 'static>(handler: H) -> Route {
    Route {
        method: "PATCH",
        router: axum::routing::patch(handler),
    }
}

/// A `DELETE` route.
pub(crate) fn delete<H: Handler<T, AdminState>, T: 'static>(handler: H) -> Route {
    Route {
        method: "DELETE",
        router: axum::routing::delete(handler),
    }
}

fn is_unit<T: JsonSchema>() -> bool {
    T::schema_name() == "null"
}

impl Api {
    pub(crate) fn new() -> Self {
        let mut settings = SchemaSettings::draft2020_12();
        settings.definitions_path = "#/components/schemas/".into();
        Self {
            router: Router::new(),
            operations: Vec::new(),
            generator: settings.into_generator(),
        }
    }

    /// Adds a route and its documentation.
    pub(crate) fn op<Req: JsonSchema, Resp: JsonSchema>(
        &mut self,
        route: Route,
        path: &'static str,
        summary: &'static str,
        tag: &'static str,
        access: Access,
        status: u16,
    ) {
        let request = (!is_unit::<Req>()).then(|| self.generator.subschema_for::<Req>().to_value());
        let response =
            (!is_unit::<Resp>()).then(|| self.generator.subschema_for::<Resp>().to_value());
        let Route { method, router } = route;
        self.router = std::mem::take(&mut self.router).route(path, router);
        self.operations.push(Operation {
            method,
            path,
            summary,
            tag,
            access,
            status,
            request,
            response,
        });
    }

    /// The OpenAPI 3.1 document.
    pub fn document(&self) -> Value {
        let mut generator = self.generator.clone();
        let mut schemas = generator.take_definitions(true);
        schemas.insert(
            "Error".into(),
            json!({
                "type": "object",
                "required": ["error"],
                "properties": { "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": { "type": "string" },
                        "message": { "type": "string" },
                        "field": { "type": "string" }
                    }
                }}
            }),
        );
        let mut paths: Map<String, Value> = Map::new();
        for op in &self.operations {
            let params: Vec<Value> = op
                .path
                .split('/')
                .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
                .map(|name| {
                    let schema = if matches!(name, "key" | "token") {
                        json!({ "type": "string" })
                    } else if op.path.starts_with("/invites") {
                        json!({ "type": "string", "format": "uuid" })
                    } else {
                        json!({ "type": "integer" })
                    };
                    json!({ "name": name, "in": "path", "required": true, "schema": schema })
                })
                .chain(
                    (op.method == "GET" && op.response.as_ref().is_some_and(|r| r.to_string().contains("ListResponse")))
                        .then(|| {
                            vec![
                                json!({ "name": "limit", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 1, "maximum": 500 } }),
                                json!({ "name": "cursor", "in": "query", "required": false, "schema": { "type": "string" } }),
                            ]
                        })
                        .into_iter()
                        .flatten(),
                )
                .chain(
                    (op.path == "/audit")
                        .then(|| {
                            ["actor", "resource"].map(|name| {
                                json!({ "name": name, "in": "query", "required": false, "schema": { "type": "string", "maxLength": 200 } })
                            })
                        })
                        .into_iter()
                        .flatten(),
                )
                .collect();
            let mut responses = Map::new();
            let ok = match &op.response {
                Some(schema) => {
                    json!({ "description": "Success", "content": { "application/json": { "schema": schema } } })
                }
                None => json!({ "description": "Success, no content" }),
            };
            responses.insert(op.status.to_string(), ok);
            let err = |d: &str| json!({ "description": d, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
            if op.request.is_some() {
                responses.insert(
                    "400".into(),
                    err("Malformed JSON, unknown field or wrong type"),
                );
                responses.insert("413".into(), err("Body larger than 1 MiB"));
                responses.insert("422".into(), err("Validation failed (names the field)"));
                responses.insert("409".into(), err("Conflicts with an existing resource"));
            }
            if op.request.is_some() {
                responses.insert(
                    "415".into(),
                    err("Body not sent as application/json (or application/<x>+json)"),
                );
            }
            if op.access != Access::Public {
                responses.insert("401".into(), err("Not signed in"));
                if !matches!(op.method, "GET" | "HEAD") {
                    responses.insert(
                        "403".into(),
                        err("Authenticated by the session cookie from a page of another origin"),
                    );
                }
            }
            responses.insert("404".into(), err("Not found (or not yours)"));
            responses.insert("429".into(), err("Too many attempts"));
            responses.insert(
                "503".into(),
                err("The database is unavailable; try again (see Retry-After)"),
            );
            let mut operation = json!({
                "operationId": format!("{}{}", op.method.to_ascii_lowercase(), op.path.replace(['/', '{', '}', '-'], "_")),
                "summary": op.summary,
                "tags": [op.tag],
                "parameters": params,
                "responses": responses,
            });
            if let Some(schema) = &op.request {
                operation["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": schema } } });
            }
            if op.access == Access::Public {
                operation["security"] = json!([]);
            }
            if op.access == Access::Admin {
                operation["description"] = json!("Administrators only; others get 404.");
            }
            let entry = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
            entry[op.method.to_ascii_lowercase()] = operation;
        }
        json!({
            "openapi": "3.1.0",
            "info": {
                "title": "siteward admin API",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "Sites, nodes, containers, services, domains, users, groups, keys and jobs of a siteward cluster."
            },
            "servers": [{ "url": "/api/v1" }],
            "paths": paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {
                    "apiKey": { "type": "http", "scheme": "bearer", "description": "An API key: sw_<prefix>_<secret>" },
                    "session": { "type": "apiKey", "in": "cookie", "name": super::extract::SESSION_COOKIE }
                }
            },
            "security": [{ "apiKey": [] }, { "session": [] }]
        })
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A small, self-contained reference page rendered from the document (no external scripts).
pub fn reference_page(doc: &Value) -> String {
    let mut rows = String::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            if let Some(ops) = item.as_object() {
                for (method, op) in ops {
                    let body = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                        .as_str()
                        .map(|r| r.rsplit('/').next().unwrap_or(r).to_owned())
                        .unwrap_or_default();
                    rows.push_str(&format!(
                        "<tr><td><code>{}</code></td><td><code>/api/v1{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                        method.to_ascii_uppercase(),
                        escape(path),
                        escape(op["summary"].as_str().unwrap_or_default()),
                        escape(op["tags"][0].as_str().unwrap_or_default()),
                        escape(&body),
                    ));
                }
            }
        }
    }
    let mut schemas = String::new();
    if let Some(map) = doc["components"]["schemas"].as_object() {
        for (name, schema) in map {
            let pretty = serde_json::to_string_pretty(schema).unwrap_or_default();
            schemas.push_str(&format!(
                "<details id=\"{0}\"><summary><code>{0}</code></summary><pre>{1}</pre></details>\n",
                escape(name),
                escape(&pretty)
            ));
        }
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>siteward API</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <style>body{{font:15px/1.5 system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}}\
         table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left}}\
         pre{{background:#f6f6f6;padding:.5rem;overflow:auto}}</style></head><body>\
         <h1>siteward admin API</h1><p>Machine-readable: <a href=\"/api/openapi.json\">/api/openapi.json</a> (OpenAPI 3.1). \
         Authenticate with <code>Authorization: Bearer &lt;api key&gt;</code> or the session cookie. Errors are \
         <code>{{\"error\":{{\"code\",\"message\",\"field\"}}}}</code>.</p>\
         <table><thead><tr><th>Method</th><th>Path</th><th>Summary</th><th>Tag</th><th>Body</th></tr></thead><tbody>\n{rows}</tbody></table>\
         <h2>Schemas</h2>{schemas}</body></html>"
    )
}
