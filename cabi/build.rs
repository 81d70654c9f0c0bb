//! Generates the libibverbs struct layouts from the system's `<infiniband/verbs.h>`
//! (Debian: libibverbs-dev) into OUT_DIR; no rdma-core code is kept in the tree.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=/usr/include/infiniband/verbs.h");
    println!("cargo:rerun-if-changed=/usr/include/rdma/rdma_cma.h");
    println!("cargo:rerun-if-changed=/usr/include/infiniband/sa.h");
    println!("cargo:rerun-if-changed=/usr/include/rdma/ib_user_verbs.h");
    println!("cargo:rerun-if-changed=/usr/include/rdma/ib_user_sa.h");
    // Programs linked against the library by path record its name, not the path. (The
    // xrdma-capi package builds the same sources as an rlib only.)
    if env::var("CARGO_PKG_NAME").as_deref() == Ok("xrdma-cabi") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libxrdma.so");
    }
    let mut builder = bindgen::Builder::default()
        .header_contents(
            "xrdma_verbs.h",
            "#include <infiniband/verbs.h>\n#include <rdma/rdma_cma.h>\n\
             #include <infiniband/sa.h>\n#include <rdma/ib_user_verbs.h>\n\
             #include <rdma/ib_user_sa.h>\n",
        )
        .allowlist_recursively(false)
        .derive_default(true)
        .derive_debug(false)
        .layout_tests(true)
        .generate_comments(false)
        .wrap_unsafe_ops(true)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false);
    for ty in [
        "ibv_device",
        "_ibv_device_ops",
        "ibv_node_type",
        "ibv_transport_type",
        "ibv_context",
        "ibv_context_ops",
        "ibv_pd",
        "ibv_mr",
        "ibv_cq",
        "ibv_comp_channel",
        "ibv_qp",
        "ibv_qp_cap",
        "ibv_qp_attr",
        "ibv_qp_init_attr",
        "ibv_qp_state",
        "ibv_qp_type",
        "ibv_mig_state",
        "ibv_mtu",
        "ibv_ah",
        "ibv_ah_attr",
        "ibv_global_route",
        "ibv_gid",
        "ibv_gid__bindgen_ty_1",
        "ibv_device_attr",
        "ibv_atomic_cap",
        "ibv_port_attr",
        "ibv_port_state",
        "ibv_send_wr",
        "ibv_send_wr__bindgen.*",
        "ibv_recv_wr",
        "ibv_sge",
        "ibv_wc",
        "ibv_wc__bindgen.*",
        "ibv_wc_status",
        "ibv_wc_opcode",
        "ibv_wr_opcode",
        "ibv_send_flags",
        "ibv_srq",
        "ibv_mw",
        "ibv_mw_bind",
        "ibv_mw_bind_info",
        "ibv_mw_type",
        "ibv_async_event",
        "ibv_xrcd",
        "ibv_link_layer",
        "ibv_access_flags",
        "ibv_qp_attr_mask",
        "ibv_event_type",
        "ibv_async_event__bindgen.*",
        "ibv_wq",
        "ibv_wq_state",
        "ibv_wq_type",
        "ibv_srq_attr",
        "ibv_srq_init_attr",
        "ibv_srq_attr_mask",
        "ibv_srq_type",
        "_compat_ibv_port_attr",
        // librdmacm (<rdma/rdma_cma.h>, librdmacm-dev).
        "rdma_cm_id",
        "rdma_cm_event",
        "rdma_cm_event__bindgen.*",
        "rdma_cm_event_type",
        "rdma_port_space",
        "rdma_conn_param",
        "rdma_ud_param",
        "rdma_event_channel",
        "rdma_addrinfo",
        "rdma_route",
        "rdma_addr",
        "rdma_addr__bindgen.*",
        "rdma_ib_addr",
        "ibv_sa_path_rec",
        "ibv_qp_init_attr_ex",
        "ibv_rx_hash_conf",
        "ibv_rwq_ind_table",
        // The rest of libibverbs' exports (cabi/src/ibv/{addressing,conversions}.rs).
        "ibv_gid_entry",
        "ibv_gid_type",
        "ibv_ece",
        "ibv_grh",
        "ibv_rate",
        "ibv_fork_status",
        "ibv_rereg_mr_flags",
        "ibv_rereg_mr_err_code",
        "ibv_wc_flags",
        "ib_uverbs_ah_attr",
        "ib_uverbs_global_route",
        "ib_uverbs_qp_attr",
        "ib_user_path_rec",
    ] {
        builder = builder.allowlist_type(ty);
    }
    // pthread types and kernel integer types come from libc / plain Rust integers.
    builder = builder
        .blocklist_type("pthread_mutex_t")
        .blocklist_type("pthread_cond_t")
        .blocklist_type("sockaddr")
        .blocklist_type("sockaddr_in")
        .blocklist_type("sockaddr_in6")
        .blocklist_type("sockaddr_storage")
        .raw_line(
            "#[allow(non_camel_case_types)] pub type pthread_mutex_t = libc::pthread_mutex_t;",
        )
        .raw_line("#[allow(non_camel_case_types)] pub type pthread_cond_t = libc::pthread_cond_t;")
        .raw_line("#[allow(non_camel_case_types)] pub type socklen_t = libc::socklen_t;")
        .raw_line("#[allow(non_camel_case_types)] pub type sockaddr = libc::sockaddr;")
        .raw_line("#[allow(non_camel_case_types)] pub type sockaddr_in = libc::sockaddr_in;")
        .raw_line("#[allow(non_camel_case_types)] pub type sockaddr_in6 = libc::sockaddr_in6;")
        .raw_line(
            "#[allow(non_camel_case_types)] pub type sockaddr_storage = libc::sockaddr_storage;",
        )
        .raw_line("#[allow(non_camel_case_types)] pub type __be64 = u64;")
        .raw_line("#[allow(non_camel_case_types)] pub type __be32 = u32;")
        .raw_line("#[allow(non_camel_case_types)] pub type __be16 = u16;")
        .raw_line("#[allow(non_camel_case_types)] pub type __u8 = u8;")
        .raw_line("#[allow(non_camel_case_types)] pub type __u16 = u16;")
        .raw_line("#[allow(non_camel_case_types)] pub type __u32 = u32;")
        .raw_line("#[allow(non_camel_case_types)] pub type __u64 = u64;");
    let bindings = builder
        .generate()
        .expect("bindgen could not parse <infiniband/verbs.h> and <rdma/rdma_cma.h>: install libibverbs-dev and librdmacm-dev");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings
        .write_to_file(out.join("verbs.rs"))
        .expect("writing the bindings");
}
