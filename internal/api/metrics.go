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
)

// collector reads the counters on each scrape.
type collector struct {
	b   Backend
	log *slog.Logger
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSvcPackets, descSvcBytes, descSvcNew, descSvcActive,
		descTMPackets, descTMBytes, descTMNew, descTMActive, descTMReady, descPackets, descFlows} {
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
}
