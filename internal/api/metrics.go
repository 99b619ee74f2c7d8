package api

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	descSvcPackets = prometheus.NewDesc("switchyard_service_packets_total", "Packets forwarded for a service.", []string{"service"}, nil)
	descSvcBytes   = prometheus.NewDesc("switchyard_service_bytes_total", "Bytes forwarded for a service.", []string{"service"}, nil)
	descSvcNew     = prometheus.NewDesc("switchyard_service_new_flows_total", "Flows created for a service.", []string{"service"}, nil)
	descSvcActive  = prometheus.NewDesc("switchyard_service_active_flows", "Flow-table entries of a service.", []string{"service"}, nil)
	descTMPackets  = prometheus.NewDesc("switchyard_tm_packets_total", "Packets forwarded to a traffic manager.", []string{"tm"}, nil)
	descTMBytes    = prometheus.NewDesc("switchyard_tm_bytes_total", "Bytes forwarded to a traffic manager.", []string{"tm"}, nil)
	descTMNew      = prometheus.NewDesc("switchyard_tm_new_flows_total", "Flows assigned to a traffic manager.", []string{"tm"}, nil)
	descTMActive   = prometheus.NewDesc("switchyard_tm_active_flows", "Flow-table entries of a traffic manager.", []string{"tm"}, nil)
	descTMReady    = prometheus.NewDesc("switchyard_tm_ready", "1 when the traffic manager's MAC is resolved.", []string{"tm", "state"}, nil)
	descPackets    = prometheus.NewDesc("switchyard_packets_total", "Packets by verdict or drop reason.", []string{"counter"}, nil)
	descFlows      = prometheus.NewDesc("switchyard_flow_table_entries", "Entries in the flow table.", nil, nil)
	descFlowCap    = prometheus.NewDesc("switchyard_flow_table_capacity", "max_flows: flow and half-open entries together.", nil, nil)
	descHalfOpen   = prometheus.NewDesc("switchyard_half_open_entries", "Half-open TCP entries (a SYN, no ACK yet).", nil, nil)
	descHalfCap    = prometheus.NewDesc("switchyard_half_open_capacity", "The half-open table's share of max_flows.", nil, nil)
	descByState    = prometheus.NewDesc("switchyard_flows_by_state", "Flow-table entries by TCP phase, or udp / other.", []string{"state"}, nil)
	descByOrigin   = prometheus.NewDesc("switchyard_flows_by_origin", "Flow-table entries by origin.", []string{"origin"}, nil)
	descAged       = prometheus.NewDesc("switchyard_flows_aged_total", "Entries the sweeper removed, by reason.", []string{"reason"}, nil)
	descSweepSecs  = prometheus.NewDesc("switchyard_sweep_seconds", "Duration of the last sweep.", nil, nil)
	descSweepWalk  = prometheus.NewDesc("switchyard_sweep_walked_entries", "Entries the last sweep walked.", nil, nil)
	descMirror     = prometheus.NewDesc("switchyard_mirror_total", "The peer protocol's counters (docs/mirror.md).", []string{"counter"}, nil)
	descPeerUp     = prometheus.NewDesc("switchyard_peer_synced", "1 when the peer's whole table has been received.", []string{"peer", "state"}, nil)
	descPeerLag    = prometheus.NewDesc("switchyard_peer_lag_datagrams", "The peer's datagrams not received yet, by its last heartbeat.", []string{"peer"}, nil)
	descPeerSent   = prometheus.NewDesc("switchyard_peer_sent_total", "Datagrams sent to the peer.", []string{"peer"}, nil)
	descPeerRecv   = prometheus.NewDesc("switchyard_peer_received_total", "Datagrams accepted from the peer.", []string{"peer"}, nil)
	descPeerMiss   = prometheus.NewDesc("switchyard_peer_missing_total", "The peer's datagrams NACKed.", []string{"peer"}, nil)
	descPeerResync = prometheus.NewDesc("switchyard_peer_resyncs_total", "Full resyncs the peer asked of this distributor.", []string{"peer"}, nil)
)

// Health-check metrics, by service and TM.
var (
	descHealthy       = prometheus.NewDesc("switchyard_tm_healthy", "1 when the service's health check finds the traffic manager healthy.", []string{"service", "tm"}, nil)
	descHealthChanges = prometheus.NewDesc("switchyard_tm_health_changes_total", "Transitions between healthy and unhealthy.", []string{"service", "tm"}, nil)
	descHealthRTT     = prometheus.NewDesc("switchyard_tm_health_rtt_seconds", "The last successful health probe's time to answer.", []string{"service", "tm"}, nil)
	descSvcFallback   = prometheus.NewDesc("switchyard_service_fallback", "1 while the service's new flows go to its fallback pool.", []string{"service"}, nil)
)

// collector reads the counters on each scrape.
type collector struct {
	b   Backend
	log *slog.Logger
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSvcPackets, descSvcBytes, descSvcNew, descSvcActive,
		descTMPackets, descTMBytes, descTMNew, descTMActive, descTMReady, descPackets, descFlows,
		descFlowCap, descHalfOpen, descHalfCap, descByState, descByOrigin, descAged, descSweepSecs, descSweepWalk,
		descHealthy, descHealthChanges, descHealthRTT, descSvcFallback,
		descMirror, descPeerUp, descPeerLag, descPeerSent, descPeerRecv, descPeerMiss, descPeerResync} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s, err := c.b.Stats()
	if err != nil {
		c.log.Warn("metrics: read stats", "error", err)
		return
	}
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	gauge := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), l...)
	}
	for _, sv := range s.Services {
		counter(descSvcPackets, sv.Packets, sv.Name)
		counter(descSvcBytes, sv.Bytes, sv.Name)
		counter(descSvcNew, sv.NewFlows, sv.Name)
		gauge(descSvcActive, sv.ActiveFlows, sv.Name)
		collectHealth(ch, sv)
	}
	for _, tm := range s.TrafficManagers {
		counter(descTMPackets, tm.Packets, tm.ID)
		counter(descTMBytes, tm.Bytes, tm.ID)
		counter(descTMNew, tm.NewFlows, tm.ID)
		gauge(descTMActive, tm.ActiveFlows, tm.ID)
		ready := uint64(0)
		if tm.Ready {
			ready = 1
		}
		gauge(descTMReady, ready, tm.ID, tm.State)
	}
	for _, ct := range s.Counters {
		counter(descPackets, ct.Packets, ct.Name)
	}
	gauge(descFlows, s.FlowEntries)
	gauge(descFlowCap, uint64(s.FlowCapacity))
	gauge(descHalfOpen, s.HalfOpenEntries)
	gauge(descHalfCap, uint64(s.HalfOpenCapacity))
	for k, v := range s.FlowsByState {
		gauge(descByState, v, k)
	}
	for k, v := range s.FlowsByOrigin {
		gauge(descByOrigin, v, k)
	}
	for k, v := range s.Aged {
		counter(descAged, v, k)
	}
	if s.LastSweep != nil {
		ch <- prometheus.MustNewConstMetric(descSweepSecs, prometheus.GaugeValue, s.LastSweep.Seconds)
		gauge(descSweepWalk, s.LastSweep.Walked)
	}
	for k, v := range s.Mirror {
		counter(descMirror, v, k)
	}
	for _, p := range s.Peers {
		synced := uint64(0)
		if p.State == "synced" {
			synced = 1
		}
		gauge(descPeerUp, synced, p.Addr, p.State)
		gauge(descPeerLag, p.Lag, p.Addr)
		counter(descPeerSent, p.Sent, p.Addr)
		counter(descPeerRecv, p.Received, p.Addr)
		counter(descPeerMiss, p.Missing, p.Addr)
		counter(descPeerResync, p.Resyncs, p.Addr)
	}
}

func collectHealth(ch chan<- prometheus.Metric, sv ServiceStats) {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, h := range sv.Health {
		ch <- prometheus.MustNewConstMetric(descHealthy, prometheus.GaugeValue, b(h.Healthy), sv.Name, h.TM)
		ch <- prometheus.MustNewConstMetric(descHealthChanges, prometheus.CounterValue, float64(h.Changes), sv.Name, h.TM)
		ch <- prometheus.MustNewConstMetric(descHealthRTT, prometheus.GaugeValue, h.RTTSeconds, sv.Name, h.TM)
	}
	ch <- prometheus.MustNewConstMetric(descSvcFallback, prometheus.GaugeValue, b(sv.Fallback), sv.Name)
}
