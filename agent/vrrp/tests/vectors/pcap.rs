//! Just enough libpcap and pcapng to read captured Ethernet frames and write new ones, and to
//! take IPv4/IPv6 headers apart and build them. Test code: panics on malformed files.

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::net::IpAddr;

/// Ethernet frames of a libpcap or pcapng file, in order.
pub fn read_frames(file: &[u8]) -> Vec<Vec<u8>> {
    match file.get(..4) {
        Some([0x0a, 0x0d, 0x0d, 0x0a]) => read_pcapng(file),
        Some([0xd4, 0xc3, 0xb2, 0xa1]) => read_pcap(file),
        other => panic!("not a pcap or pcapng file (magic {other:02x?})"),
    }
}

fn u32_le(bytes: &[u8], at: usize) -> usize {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize
}

/// libpcap: 24-byte global header, then 16-byte record headers each followed by the frame.
fn read_pcap(file: &[u8]) -> Vec<Vec<u8>> {
    assert_eq!(u32_le(file, 20), 1, "link type must be Ethernet");
    let mut frames = Vec::new();
    let mut at = 24;
    while at < file.len() {
        let captured = u32_le(file, at + 8);
        frames.push(file[at + 16..at + 16 + captured].to_vec());
        at += 16 + captured;
    }
    frames
}

/// pcapng (little-endian sections only): blocks of type, total length, body, total length.
/// Enhanced Packet Blocks (type 6) carry the frames.
fn read_pcapng(file: &[u8]) -> Vec<Vec<u8>> {
    assert_eq!(
        &file[8..12],
        &[0x4d, 0x3c, 0x2b, 0x1a],
        "little-endian section expected"
    );
    let mut frames = Vec::new();
    let mut at = 0;
    while at < file.len() {
        let (block_type, block_len) = (u32_le(file, at), u32_le(file, at + 4));
        if block_type == 6 {
            let captured = u32_le(file, at + 20);
            frames.push(file[at + 28..at + 28 + captured].to_vec());
        }
        at += block_len;
    }
    frames
}

/// Writes Ethernet frames as a libpcap file.
pub fn write_pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut file = Vec::new();
    for word in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        // magic, version 2.4 (two u16), thiszone, sigfigs, snaplen, link type Ethernet
        if word == 0x0004_0002 {
            file.extend_from_slice(&2u16.to_le_bytes());
            file.extend_from_slice(&4u16.to_le_bytes());
        } else {
            file.extend_from_slice(&word.to_le_bytes());
        }
    }
    for (index, frame) in frames.iter().enumerate() {
        let len = frame.len() as u32;
        for word in [index as u32, 0, len, len] {
            file.extend_from_slice(&word.to_le_bytes());
        }
        file.extend_from_slice(frame);
    }
    file
}

/// An IP packet carried by an Ethernet frame.
#[derive(Debug)]
pub struct IpPacket {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub hop_limit: u8,
    pub protocol: u8,
    pub payload: Vec<u8>,
}

/// The IP packet of an Ethernet II frame, `None` for other ethertypes (ARP).
pub fn ip_of_frame(frame: &[u8]) -> Option<IpPacket> {
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let ip = &frame[14..];
    match ethertype {
        0x0800 => {
            let header_len = usize::from(ip[0] & 0x0f) * 4;
            let total_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let src: [u8; 4] = ip[12..16].try_into().expect("4 bytes");
            let dst: [u8; 4] = ip[16..20].try_into().expect("4 bytes");
            Some(IpPacket {
                src: src.into(),
                dst: dst.into(),
                hop_limit: ip[8],
                protocol: ip[9],
                payload: ip[header_len..total_len].to_vec(),
            })
        }
        0x86dd => {
            let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let src: [u8; 16] = ip[8..24].try_into().expect("16 bytes");
            let dst: [u8; 16] = ip[24..40].try_into().expect("16 bytes");
            Some(IpPacket {
                src: src.into(),
                dst: dst.into(),
                hop_limit: ip[7],
                protocol: ip[6],
                payload: ip[40..40 + payload_len].to_vec(),
            })
        }
        _ => None,
    }
}

/// An Ethernet frame from the virtual MAC of VRID `vrid` carrying `payload` (protocol 112)
/// in an IPv4 or IPv6 header with TTL / hop limit 255.
pub fn vrrp_frame(vrid: u8, src: IpAddr, dst: IpAddr, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let d = dst.octets();
            frame.extend_from_slice(&[0x01, 0x00, 0x5e, d[1] & 0x7f, d[2], d[3]]);
            frame.extend_from_slice(&[0x00, 0x00, 0x5e, 0x00, 0x01, vrid, 0x08, 0x00]);
            let total_len = (20 + payload.len()) as u16;
            let mut header = [0u8; 20];
            header[0] = 0x45;
            header[1] = 0xc0;
            header[2..4].copy_from_slice(&total_len.to_be_bytes());
            header[8] = 255;
            header[9] = 112;
            header[12..16].copy_from_slice(&src.octets());
            header[16..20].copy_from_slice(&dst.octets());
            let sum = header
                .chunks_exact(2)
                .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                .sum::<u32>();
            let folded = (sum & 0xffff) + (sum >> 16);
            let folded = (folded & 0xffff) + (folded >> 16);
            header[10..12].copy_from_slice(&(!(folded as u16)).to_be_bytes());
            frame.extend_from_slice(&header);
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let d = dst.octets();
            frame.extend_from_slice(&[0x33, 0x33, d[12], d[13], d[14], d[15]]);
            frame.extend_from_slice(&[0x00, 0x00, 0x5e, 0x00, 0x02, vrid, 0x86, 0xdd]);
            let mut header = [0u8; 40];
            header[0] = 0x60;
            header[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
            header[6] = 112;
            header[7] = 255;
            header[8..24].copy_from_slice(&src.octets());
            header[24..40].copy_from_slice(&dst.octets());
            frame.extend_from_slice(&header);
        }
        _ => panic!("mixed families"),
    }
    frame.extend_from_slice(payload);
    frame
}

/// The VRRP fields tshark -V printed for one frame.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TsharkVrrp {
    pub frame: usize,
    pub src: String,
    pub dst: String,
    pub ttl: Option<u8>,
    pub version: Option<u8>,
    pub packet_type: Option<u8>,
    pub vrid: Option<u8>,
    pub priority: Option<u8>,
    pub count: Option<u8>,
    pub auth_type: Option<u8>,
    pub auth_string: Option<String>,
    pub adver_int: Option<u16>,
    pub checksum: Option<u16>,
    pub checksum_status: Option<String>,
    pub addresses: Vec<IpAddr>,
}

/// Parses `tshark -V` output into the VRRP fields of each frame that has a VRRP layer.
pub fn parse_tshark(text: &str) -> Vec<TsharkVrrp> {
    let mut frames = Vec::new();
    for block in text
        .split("\nFrame ")
        .map(|b| b.trim_start_matches("Frame "))
    {
        let Some((number, _)) = block.split_once(':') else {
            continue;
        };
        let Ok(number) = number.trim().parse() else {
            continue;
        };
        let Some((ip, vrrp)) = block.split_once("Virtual Router Redundancy Protocol") else {
            continue;
        };
        let mut out = TsharkVrrp {
            frame: number,
            ..TsharkVrrp::default()
        };
        for line in ip.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("Source Address: ") {
                out.src = v.to_string();
            } else if let Some(v) = line.strip_prefix("Destination Address: ") {
                out.dst = v.to_string();
            } else if let Some(v) = line.strip_prefix("Time to Live: ") {
                out.ttl = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("Hop Limit: ") {
                out.ttl = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("Source: ").filter(|v| is_ip(v)) {
                // Some tshark versions name the IPv6 addresses "Source:" / "Destination:".
                out.src = v.to_string();
            } else if let Some(v) = line.strip_prefix("Destination: ").filter(|v| is_ip(v)) {
                out.dst = v.to_string();
            }
        }
        for line in vrrp.lines().map(str::trim) {
            let value = |key: &str| line.split_once(key).map(|(_, v)| v.trim().to_string());
            if let Some(v) = value("= VRRP protocol version: ") {
                out.version = v.parse().ok();
            } else if let Some(v) = value("= VRRP packet type: ") {
                out.packet_type = parenthesised(&v);
            } else if let Some(v) = line.strip_prefix("Virtual Rtr ID: ") {
                out.vrid = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("Priority: ") {
                out.priority = v.split(' ').next().and_then(|p| p.parse().ok());
            } else if let Some(v) = line.strip_prefix("Addr Count: ") {
                out.count = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("Auth Type: ") {
                out.auth_type = parenthesised(v);
            } else if let Some(v) = line.strip_prefix("Authentication String: ") {
                out.auth_string = Some(v.to_string());
            } else if let Some(v) = value("Adver Int: ") {
                out.adver_int = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("Checksum: 0x") {
                out.checksum = v.get(..4).and_then(|h| u16::from_str_radix(h, 16).ok());
            } else if let Some(v) = line.strip_prefix("[Checksum Status: ") {
                out.checksum_status = Some(v.trim_end_matches(']').to_string());
            } else if let Some(v) = line
                .strip_prefix("IP Address: ")
                .or_else(|| line.strip_prefix("IPv6 Address: "))
            {
                out.addresses
                    .push(v.parse().expect("tshark prints addresses"));
            }
        }
        frames.push(out);
    }
    frames
}

fn is_ip(text: &str) -> bool {
    text.parse::<IpAddr>().is_ok()
}

/// The number in the last parentheses of `text`: "Advertisement (1)" gives 1.
fn parenthesised(text: &str) -> Option<u8> {
    let start = text.rfind('(')?;
    text[start + 1..].trim_end_matches(')').parse().ok()
}
