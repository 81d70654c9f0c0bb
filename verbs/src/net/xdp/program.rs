//! Our XDP program, generated as BPF bytecode at run time.
//!
//! It redirects to the AF_XDP socket of the receiving queue exactly the frames that are
//! Ethernet / IPv4 (no options, not fragmented) or IPv6 / UDP to our port, and passes every
//! other frame (ARP, ICMP, TCP, other UDP) to the kernel, so binding an interface never cuts
//! its host off the network. When no socket sits in the queue's slot, `bpf_redirect_map`
//! falls back to `XDP_PASS` as well.
//!
//! Generating the dozen-odd instructions here, rather than compiling C for the BPF target,
//! keeps the build free of clang and libbpf ELF loading, and lets the port be a constant in
//! the program instead of a map lookup per packet.

/// One BPF instruction, in the kernel's `struct bpf_insn` layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Insn {
    code: u8,
    /// dst register in the low nibble, src register in the high nibble.
    regs: u8,
    off: i16,
    imm: i32,
}

// Instruction classes, sizes, modes and operations (linux/bpf_common.h, linux/bpf.h).
const LDX: u8 = 0x01;
const ALU64: u8 = 0x07;
const JMP: u8 = 0x05;
const MEM: u8 = 0x60;
const W: u8 = 0x00;
const H: u8 = 0x08;
const B: u8 = 0x10;
const K: u8 = 0x00;
const X: u8 = 0x08;
const MOV: u8 = 0xb0;
const ADD: u8 = 0x00;
const AND: u8 = 0x50;
const JA: u8 = 0x00;
const JEQ: u8 = 0x10;
const JGT: u8 = 0x20;
const JNE: u8 = 0x50;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;
const LD_IMM64: u8 = 0x18;
const PSEUDO_MAP_FD: u8 = 1;
const FUNC_REDIRECT_MAP: i32 = 51;

/// `XDP_PASS`.
const XDP_PASS: i32 = 2;

/// Offsets in `struct xdp_md`.
const MD_DATA: i16 = 0;
const MD_DATA_END: i16 = 4;
const MD_RX_QUEUE_INDEX: i16 = 16;

#[derive(Clone, Copy)]
enum Label {
    Ipv6,
    Redirect,
    Pass,
}

/// A tiny assembler: instructions plus forward jumps to named labels, fixed up at the end.
struct Asm {
    insns: Vec<Insn>,
    fixups: Vec<(usize, Label)>,
    labels: [Option<usize>; 3],
}

impl Asm {
    fn new() -> Self {
        Asm {
            insns: Vec::new(),
            fixups: Vec::new(),
            labels: [None; 3],
        }
    }

    fn raw(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            regs: dst | (src << 4),
            off,
            imm,
        });
    }

    fn mov_reg(&mut self, dst: u8, src: u8) {
        self.raw(ALU64 | MOV | X, dst, src, 0, 0);
    }

    fn mov_imm(&mut self, dst: u8, imm: i32) {
        self.raw(ALU64 | MOV | K, dst, 0, 0, imm);
    }

    fn add_imm(&mut self, dst: u8, imm: i32) {
        self.raw(ALU64 | ADD | K, dst, 0, 0, imm);
    }

    fn and_imm(&mut self, dst: u8, imm: i32) {
        self.raw(ALU64 | AND | K, dst, 0, 0, imm);
    }

    fn load(&mut self, size: u8, dst: u8, src: u8, off: i16) {
        self.raw(LDX | MEM | size, dst, src, off, 0);
    }

    fn jump_imm(&mut self, op: u8, dst: u8, imm: i32, to: Label) {
        self.fixups.push((self.insns.len(), to));
        self.raw(JMP | op | K, dst, 0, 0, imm);
    }

    fn jump_reg(&mut self, op: u8, dst: u8, src: u8, to: Label) {
        self.fixups.push((self.insns.len(), to));
        self.raw(JMP | op | X, dst, src, 0, 0);
    }

    fn jump(&mut self, to: Label) {
        self.fixups.push((self.insns.len(), to));
        self.raw(JMP | JA, 0, 0, 0, 0);
    }

    fn label(&mut self, l: Label) {
        self.labels[l as usize] = Some(self.insns.len());
    }

    fn load_map_fd(&mut self, dst: u8, fd: i32) {
        self.raw(LD_IMM64, dst, PSEUDO_MAP_FD, 0, fd);
        self.raw(0, 0, 0, 0, 0);
    }

    fn finish(mut self) -> Vec<Insn> {
        for (at, label) in self.fixups {
            let target = self.labels[label as usize].expect("every jump target is placed");
            self.insns[at].off = (target as isize - at as isize - 1) as i16;
        }
        self.insns
    }
}

/// A 16-bit big-endian field as a 2-byte load sees it on this host.
fn be16_as_loaded(v: u16) -> i32 {
    u16::from_ne_bytes(v.to_be_bytes()) as i32
}

/// Builds the program for UDP destination port `port`, redirecting into the XSKMAP `map_fd`.
pub(crate) fn redirect_udp_port(port: u16, map_fd: i32) -> Vec<Insn> {
    const ETH: i16 = 14;
    const IP4: i16 = 20;
    const IP6: i16 = 40;
    const UDP: i32 = 8;
    let mut a = Asm::new();
    // r6 = ctx; r2 = data; r3 = data_end
    a.mov_reg(6, 1);
    a.load(W, 2, 6, MD_DATA);
    a.load(W, 3, 6, MD_DATA_END);
    // Ethernet + IPv4 + UDP must be there for anything we take.
    a.mov_reg(4, 2);
    a.add_imm(4, (ETH + IP4) as i32 + UDP);
    a.jump_reg(JGT, 4, 3, Label::Pass);
    a.load(H, 5, 2, 12);
    a.jump_imm(JEQ, 5, be16_as_loaded(0x86dd), Label::Ipv6);
    a.jump_imm(JNE, 5, be16_as_loaded(0x0800), Label::Pass);
    // IPv4: version 4, IHL 5, protocol UDP, not a fragment, our port.
    a.load(B, 5, 2, ETH);
    a.jump_imm(JNE, 5, 0x45, Label::Pass);
    a.load(B, 5, 2, ETH + 9);
    a.jump_imm(JNE, 5, 17, Label::Pass);
    a.load(H, 5, 2, ETH + 6);
    a.and_imm(5, be16_as_loaded(0x3fff));
    a.jump_imm(JNE, 5, 0, Label::Pass);
    a.load(H, 5, 2, ETH + IP4 + 2);
    a.jump_imm(JNE, 5, be16_as_loaded(port), Label::Pass);
    a.jump(Label::Redirect);
    // IPv6: next header UDP (no extension headers), our port.
    a.label(Label::Ipv6);
    a.mov_reg(4, 2);
    a.add_imm(4, (ETH + IP6) as i32 + UDP);
    a.jump_reg(JGT, 4, 3, Label::Pass);
    a.load(B, 5, 2, ETH + 6);
    a.jump_imm(JNE, 5, 17, Label::Pass);
    a.load(H, 5, 2, ETH + IP6 + 2);
    a.jump_imm(JNE, 5, be16_as_loaded(port), Label::Pass);
    // bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS)
    a.label(Label::Redirect);
    a.load(W, 2, 6, MD_RX_QUEUE_INDEX);
    a.load_map_fd(1, map_fd);
    a.mov_imm(3, XDP_PASS);
    a.raw(JMP | CALL, 0, 0, 0, FUNC_REDIRECT_MAP);
    a.raw(JMP | EXIT, 0, 0, 0, 0);
    a.label(Label::Pass);
    a.mov_imm(0, XDP_PASS);
    a.raw(JMP | EXIT, 0, 0, 0, 0);
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_land_on_their_labels() {
        let prog = redirect_udp_port(4791, 3);
        // The last two instructions are the pass path; every conditional jump to Pass must
        // land on `r0 = XDP_PASS`.
        let pass = prog.len() - 2;
        assert_eq!(
            prog[pass],
            Insn {
                code: ALU64 | MOV | K,
                regs: 0,
                off: 0,
                imm: XDP_PASS
            }
        );
        let mut to_pass = 0;
        for (i, insn) in prog.iter().enumerate() {
            if insn.code & 0x07 == JMP && insn.code & 0xf0 != CALL && insn.code & 0xf0 != EXIT {
                let target = i as isize + 1 + insn.off as isize;
                assert!(
                    target > i as isize && (target as usize) < prog.len(),
                    "jump {i} out of range"
                );
                if target as usize == pass {
                    to_pass += 1;
                }
            }
        }
        assert_eq!(to_pass, 9);
    }

    #[test]
    fn port_and_map_are_encoded() {
        let prog = redirect_udp_port(0x12b7, 9);
        assert!(prog.iter().any(|i| i.imm == be16_as_loaded(0x12b7)));
        let ld = prog
            .iter()
            .position(|i| i.code == LD_IMM64)
            .expect("map load");
        assert_eq!(prog[ld].imm, 9);
        assert_eq!(prog[ld].regs >> 4, PSEUDO_MAP_FD);
    }
}
