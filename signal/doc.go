// Package signal is the client library for traffic-manager (TM) software that
// talks to Switchyard distributors: it encodes and decodes signal messages
// (MEMORIZE, FORGET, MIRROR, RELATE, AGE) and sends them over the three
// transports the distributor accepts:
//
//   - signal frames (Frame, FrameSender): the message alone in an Ethernet
//     frame of EtherType 0x88B5, sent to the distributor's interface MAC or
//     the signal multicast MAC;
//   - in-band shims (Shim): the message inserted after the MAC addresses of
//     a packet the TM sends through the distributor anyway, so the signal
//     arrives no later than the packet it concerns;
//   - UDP control datagrams (SealUDP, UDPSender), authenticated with
//     HMAC-SHA256, for TMs that are not on the distributor's segment.
//
// The wire format is defined once, in bpf/switchyard.h. This package
// encodes and decodes it through Go structs that mirror the C structs field
// by field (TM software must not need the XDP objects), and a test checks
// every one of them, and the constants, against the compiled object's BTF.
// docs/signals.md specifies the format for implementations in other
// languages.
//
// Keys are the flow as the distributor sees it arriving: for a client's
// flow, client → VIP; for a flow the TM opens to a server, server → TM
// address (the direction of the replies).
package signal
