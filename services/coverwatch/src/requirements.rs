//! The RequirementsService edge: authenticate, decode, call the engine, encode.

use std::sync::Arc;

use coverwatch_core::requirements::RequirementSet;
use coverwatch_engine::{Engine, LinkEvaluation, VendorCheck};
use coverwatch_proto::convert::{self, FieldError};
use coverwatch_proto::detail::DetailCodecs;
use coverwatch_proto::v1;
use coverwatch_proto::v1::put_requirement_set_request::Definition;
use coverwatch_proto::v1::requirements_service_server::RequirementsService;
use coverwatch_store::StoredRequirementSet;
use tonic::{Request, Response, Status};

use crate::auth::ApiKeys;
use crate::grpc::{field, link_id, status};

const DEFAULT_SET_PAGE: u32 = 50;
const MAX_SET_PAGE: u32 = 500;
/// A JSON set of 100 rules with long names fits well within this.
const MAX_JSON_BYTES: usize = 256 * 1024;

pub struct RequirementsApi {
    engine: Engine,
    keys: ApiKeys,
    /// The vendors' codecs, for the arm of a vendor verdict (see `providers::detail_codecs`).
    codecs: Arc<DetailCodecs>,
}

impl RequirementsApi {
    pub fn new(engine: Engine, keys: ApiKeys, codecs: DetailCodecs) -> Self {
        Self {
            engine,
            keys,
            codecs: Arc::new(codecs),
        }
    }
}

fn set_to_proto(stored: StoredRequirementSet) -> v1::RequirementSet {
    convert::requirement_set_to_proto(stored.set, stored.created_at, stored.updated_at)
}

fn evaluation_to_proto(evaluation: LinkEvaluation) -> v1::Evaluation {
    v1::Evaluation {
        requirement_set_id: evaluation.set_id,
        status: v1::RequirementsStatus::from(evaluation.evaluation.status) as i32,
        outcomes: evaluation
            .evaluation
            .outcomes
            .into_iter()
            .map(Into::into)
            .collect(),
        evaluated_at: Some(convert::timestamp(evaluation.evaluated_at)),
    }
}

/// The set a PutRequirementSet carries, in either form. Paths are prefixed with the form's
/// field (`set.` or `json.`), so the message names the request field as well as the rule.
fn definition(definition: Option<Definition>) -> Result<RequirementSet, Status> {
    match definition {
        None => Err(field(FieldError::new(
            "definition",
            "is required: send `set` or `json`",
        ))),
        Some(Definition::Set(set)) => {
            let set =
                convert::requirement_set_from_proto(set).map_err(|e| field(e.within("set")))?;
            set.validate()
                .map_err(|e| field(FieldError::new(format!("set.{}", e.path), e.message)))?;
            Ok(set)
        }
        Some(Definition::Json(json)) => {
            if json.len() > MAX_JSON_BYTES {
                return Err(field(FieldError::new(
                    "json",
                    format!("must be at most {MAX_JSON_BYTES} bytes"),
                )));
            }
            RequirementSet::from_json(&json).map_err(|e| {
                let path = if e.path == "$" {
                    "json".to_owned()
                } else {
                    format!("json.{}", e.path)
                };
                field(FieldError::new(path, e.message))
            })
        }
    }
}

#[tonic::async_trait]
impl RequirementsService for RequirementsApi {
    async fn put_requirement_set(
        &self,
        request: Request<v1::PutRequirementSetRequest>,
    ) -> Result<Response<v1::PutRequirementSetResponse>, Status> {
        let tenant = self.keys.tenant_of(&request).await?;
        let set = definition(request.into_inner().definition)?;
        let outcome = self
            .engine
            .put_requirement_set(&tenant, set)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::PutRequirementSetResponse {
            set: Some(set_to_proto(outcome.stored)),
            created: outcome.created,
            links_evaluated: outcome.links_evaluated,
        }))
    }

    async fn get_requirement_set(
        &self,
        request: Request<v1::GetRequirementSetRequest>,
    ) -> Result<Response<v1::GetRequirementSetResponse>, Status> {
        let tenant = self.keys.tenant_of(&request).await?;
        let stored = self
            .engine
            .get_requirement_set(&tenant, &request.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::GetRequirementSetResponse {
            set: Some(set_to_proto(stored)),
        }))
    }

    async fn list_requirement_sets(
        &self,
        request: Request<v1::ListRequirementSetsRequest>,
    ) -> Result<Response<v1::ListRequirementSetsResponse>, Status> {
        let tenant = self.keys.tenant_of(&request).await?;
        let r = request.into_inner();
        let limit = convert::page_size(r.page_size, DEFAULT_SET_PAGE, MAX_SET_PAGE, "page_size")
            .map_err(field)?;
        // The token is the last listed set's id, opaque to callers: the set ids that released
        // callers passed as `after_id` (the same field number) keep working.
        let after = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
        let (sets, next) = self
            .engine
            .list_requirement_sets(&tenant, after, u64::from(limit))
            .await
            .map_err(status)?;
        Ok(Response::new(v1::ListRequirementSetsResponse {
            sets: sets.into_iter().map(set_to_proto).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn delete_requirement_set(
        &self,
        request: Request<v1::DeleteRequirementSetRequest>,
    ) -> Result<Response<v1::DeleteRequirementSetResponse>, Status> {
        let tenant = self.keys.tenant_of(&request).await?;
        let deleted = self
            .engine
            .delete_requirement_set(&tenant, &request.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::DeleteRequirementSetResponse { deleted }))
    }

    async fn attach_requirement_set(
        &self,
        request: Request<v1::AttachRequirementSetRequest>,
    ) -> Result<Response<v1::AttachRequirementSetResponse>, Status> {
        let tenant = self.keys.tenant_of(&request).await?;
        let r = request.into_inner();
        let id = link_id(&r.link_id)?;
        let (record, evaluation) = self
            .engine
            .attach_requirement_set(&tenant, &id, r.requirement_set_id.as_deref())
            .await
            .map_err(status)?;
        Ok(Response::new(v1::AttachRequirementSetResponse {
            link: Some(record.link.into()),
            evaluation: evaluation.map(evaluation_to_proto),
        }))
    }

    async fn evaluate_link(
        &self,
        request: Request<v1::EvaluateLinkRequest>,
    ) -> Result<Response<v1::EvaluateLinkResponse>, Status> {
        let tenant = self.keys.tenant_of(&request).await?;
        let id = link_id(&request.get_ref().link_id)?;
        let mut evaluation = self
            .engine
            .evaluate_link(&tenant, &id)
            .await
            .map_err(status)?;
        let vendor_check = evaluation.vendor.take().map(|check| match check {
            VendorCheck::Available(verdict) => convert::vendor_check_to_proto(
                verdict.provider().clone(),
                Ok(verdict),
                &self.codecs,
            ),
            VendorCheck::Unavailable { provider, reason } => {
                convert::vendor_check_to_proto(provider, Err(reason), &self.codecs)
            }
        });
        Ok(Response::new(v1::EvaluateLinkResponse {
            evaluation: Some(evaluation_to_proto(evaluation)),
            vendor_check,
        }))
    }
}
