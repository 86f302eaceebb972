//! The coverwatch gRPC contract (package `coverwatch.v1`, sources in `proto/coverwatch/v1/`):
//! generated prost messages, the tonic client and server, the descriptor set for reflection, and
//! [`convert`]ions between these types and `coverwatch-core`, and the [`detail`] codecs through
//! which vendor crates convert their own event detail.

pub mod convert;
pub mod detail;

/// Generated from `proto/coverwatch/v1/*.proto`; the `.proto` comments are the API reference.
pub mod v1 {
    tonic::include_proto!("coverwatch.v1");
}

/// The encoded `FileDescriptorSet` of every `.proto` file (imports and comments included), for
/// `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/coverwatch_descriptor.bin"));

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use prost::Message as _;
    use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};

    use super::*;

    fn descriptors() -> FileDescriptorSet {
        FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap()
    }

    #[test]
    fn descriptor_set_holds_the_service_and_its_imports() {
        let set = descriptors();
        let names: Vec<&str> = set.file.iter().map(|file| file.name()).collect();
        assert!(
            names.contains(&"google/protobuf/timestamp.proto"),
            "{names:?}"
        );
        let service = set
            .file
            .iter()
            .flat_map(|file| &file.service)
            .find(|service| service.name() == "MonitoringService")
            .unwrap();
        let methods: Vec<&str> = service.method.iter().map(|method| method.name()).collect();
        assert_eq!(
            methods,
            [
                "StartLink",
                "CompleteLink",
                "GetLink",
                "ListLinks",
                "StartReconnect",
                "Descope",
                "RefreshLink",
                "SubmitReconnectCredentials",
                "SelectVerificationOption",
                "SubmitVerificationCode",
                "GetPolicy",
                "ListPolicies",
                "GetPolicyHistory",
                "GetAccount",
                "ListEvents",
                "WatchEvents",
                "AckEvents",
            ]
        );
        let watch = service
            .method
            .iter()
            .find(|method| method.name() == "WatchEvents")
            .unwrap();
        assert!(watch.server_streaming() && !watch.client_streaming());
        assert_eq!(watch.output_type(), ".coverwatch.v1.Event");
        assert_eq!(
            v1::monitoring_service_server::SERVICE_NAME,
            "coverwatch.v1.MonitoringService"
        );
    }

    #[test]
    fn descriptor_set_holds_the_admin_service() {
        let set = descriptors();
        let service = set
            .file
            .iter()
            .flat_map(|file| &file.service)
            .find(|service| service.name() == "AdminService")
            .unwrap();
        let methods: Vec<&str> = service.method.iter().map(|method| method.name()).collect();
        assert_eq!(
            methods,
            [
                "ListDeliveries",
                "GetDelivery",
                "ReplayDelivery",
                "CreateTenant",
                "GetTenant",
                "ListTenants",
                "DisableTenant",
                "EnableTenant",
                "CreateApiKey",
                "RevokeApiKey",
                "PutVendorConnection",
                "GetVendorConnection",
                "ListVendorConnections",
                "DeleteVendorConnection",
            ]
        );
        assert_eq!(
            v1::admin_service_server::SERVICE_NAME,
            "coverwatch.v1.AdminService"
        );
    }

    /// The `.proto` comments are the API reference, so nothing may go undocumented.
    #[test]
    fn every_element_of_the_contract_is_documented() {
        // Descriptor field numbers that make up SourceCodeInfo paths.
        const FILE_MESSAGE: i32 = 4;
        const FILE_ENUM: i32 = 5;
        const FILE_SERVICE: i32 = 6;
        const MESSAGE_FIELD: i32 = 2;
        const MESSAGE_NESTED: i32 = 3;
        const MESSAGE_ENUM: i32 = 4;
        const MESSAGE_ONEOF: i32 = 8;
        const ENUM_VALUE: i32 = 2;
        const SERVICE_METHOD: i32 = 2;

        fn enum_paths(e: &EnumDescriptorProto, path: Vec<i32>, out: &mut Vec<(Vec<i32>, String)>) {
            out.push((path.clone(), e.name().to_owned()));
            for (i, value) in e.value.iter().enumerate() {
                let mut p = path.clone();
                p.extend([ENUM_VALUE, i as i32]);
                out.push((p, format!("{}.{}", e.name(), value.name())));
            }
        }

        fn message_paths(m: &DescriptorProto, path: Vec<i32>, out: &mut Vec<(Vec<i32>, String)>) {
            if m.options.as_ref().is_some_and(|o| o.map_entry()) {
                return;
            }
            out.push((path.clone(), m.name().to_owned()));
            for (i, field) in m.field.iter().enumerate() {
                let mut p = path.clone();
                p.extend([MESSAGE_FIELD, i as i32]);
                out.push((p, format!("{}.{}", m.name(), field.name())));
            }
            for (i, oneof) in m.oneof_decl.iter().enumerate() {
                // proto3 `optional` fields hide in synthetic oneofs named `_field`.
                if oneof.name().starts_with('_') {
                    continue;
                }
                let mut p = path.clone();
                p.extend([MESSAGE_ONEOF, i as i32]);
                out.push((p, format!("{}.{}", m.name(), oneof.name())));
            }
            for (i, nested) in m.nested_type.iter().enumerate() {
                let mut p = path.clone();
                p.extend([MESSAGE_NESTED, i as i32]);
                message_paths(nested, p, out);
            }
            for (i, e) in m.enum_type.iter().enumerate() {
                let mut p = path.clone();
                p.extend([MESSAGE_ENUM, i as i32]);
                enum_paths(e, p, out);
            }
        }

        let mut undocumented = Vec::new();
        for file in descriptors().file {
            if file.package() != "coverwatch.v1" {
                continue;
            }
            let comments: HashMap<Vec<i32>, String> = file
                .source_code_info
                .as_ref()
                .unwrap()
                .location
                .iter()
                .map(|l| (l.path.clone(), l.leading_comments().trim().to_owned()))
                .collect();
            let mut elements = Vec::new();
            for (i, m) in file.message_type.iter().enumerate() {
                message_paths(m, vec![FILE_MESSAGE, i as i32], &mut elements);
            }
            for (i, e) in file.enum_type.iter().enumerate() {
                enum_paths(e, vec![FILE_ENUM, i as i32], &mut elements);
            }
            for (i, service) in file.service.iter().enumerate() {
                elements.push((vec![FILE_SERVICE, i as i32], service.name().to_owned()));
                for (j, method) in service.method.iter().enumerate() {
                    elements.push((
                        vec![FILE_SERVICE, i as i32, SERVICE_METHOD, j as i32],
                        format!("{}.{}", service.name(), method.name()),
                    ));
                }
            }
            for (path, name) in elements {
                if comments.get(&path).is_none_or(String::is_empty) {
                    undocumented.push(format!("{}: {name}", file.name()));
                }
            }
        }
        assert!(
            undocumented.is_empty(),
            "undocumented:\n{}",
            undocumented.join("\n")
        );
    }

    /// Issue 15: every RPC that pages names it one way — `page_size` and a string `page_token`
    /// in, a string `next_page_token` out — so that one client helper pages them all. The event
    /// reads are the one exception: they take a cursor, a position in the event stream that
    /// callers store and acknowledge (see the comment on ListEventsRequest). Deprecated fields
    /// that released callers still send are allowed beside the standard ones.
    #[test]
    fn every_paged_rpc_names_its_paging_fields_one_way() {
        use prost_types::field_descriptor_proto::Type;

        const CURSOR_READS: [&str; 2] = ["ListEvents", "WatchEvents"];
        let set = descriptors();
        let messages: HashMap<String, &DescriptorProto> = set
            .file
            .iter()
            .flat_map(|file| {
                file.message_type
                    .iter()
                    .map(move |m| (format!(".{}.{}", file.package(), m.name()), m))
            })
            .collect();
        let field_type = |message: &DescriptorProto, name: &str| {
            message
                .field
                .iter()
                .find(|f| f.name() == name)
                .map(|f| f.r#type())
        };
        let mut paged = Vec::new();
        for service in set.file.iter().flat_map(|file| &file.service) {
            for method in &service.method {
                let request = messages[method.input_type()];
                let response = messages[method.output_type()];
                let rpc = format!("{}.{}", service.name(), method.name());
                let pages = request.field.iter().any(|f| f.name() == "page_size");
                for field in request.field.iter().chain(&response.field) {
                    let name = field.name();
                    let paging_like = name.starts_with("after_")
                        || name.starts_with("next_")
                        || name.ends_with("_token");
                    let deprecated = field.options.as_ref().is_some_and(|o| o.deprecated());
                    if !paging_like || deprecated || CURSOR_READS.contains(&method.name()) {
                        continue;
                    }
                    assert!(
                        ["page_token", "next_page_token"].contains(&name),
                        "{rpc}: `{name}` pages under another name than page_token / \
                         next_page_token"
                    );
                }
                if !pages || CURSOR_READS.contains(&method.name()) {
                    continue;
                }
                assert_eq!(field_type(request, "page_size"), Some(Type::Int32), "{rpc}");
                assert_eq!(
                    field_type(request, "page_token"),
                    Some(Type::String),
                    "{rpc}"
                );
                assert_eq!(
                    field_type(response, "next_page_token"),
                    Some(Type::String),
                    "{rpc}"
                );
                paged.push(rpc);
            }
        }
        paged.sort();
        assert_eq!(
            paged,
            [
                "AdminService.ListDeliveries",
                "AdminService.ListTenants",
                "AdminService.ListVendorConnections",
                "MonitoringService.GetPolicyHistory",
                "MonitoringService.ListLinks",
                "RequirementsService.ListRequirementSets",
            ]
        );
    }
}
