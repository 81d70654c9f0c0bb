//! The process's devices: one context per interface, shared; the settings read once.

use xrdma_verbs::devices::{self, Backend, Settings};

#[test]
fn one_context_per_interface_and_settings_fixed_once_read() {
    // A port of its own on loopback, so that nothing else in the machine's tests meets it.
    let port = 47000 + (std::process::id() % 1000) as u16;
    devices::configure(Settings {
        ifaces: vec!["lo".into()],
        backend: Some(Backend::Udp),
        port,
    })
    .unwrap();
    let a = devices::open("lo").unwrap();
    // The same context again, while the first lives: a second one would bind a second UDP
    // socket to the port, which the kernel refuses (EADDRINUSE).
    let b = devices::open("lo").unwrap();
    assert_eq!((a.link().port, b.link().port), (port, port));
    // Interfaces the settings leave out are not devices.
    let Err(e) = devices::open("xr-none0") else {
        panic!("an interface left out was opened");
    };
    assert_eq!(e.errno(), libc::ENODEV);
    // Once read, the settings stay.
    let e = devices::configure(Settings::default()).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
    assert_eq!(devices::settings().unwrap().port, port);
}
