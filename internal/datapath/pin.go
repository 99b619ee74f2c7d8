package datapath

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Pinning: the data path outlives the daemon. Every map of the program and
// every XDP link is pinned in a per-distributor bpffs directory; a
// restarted daemon loads its program with the pinned maps in place of new
// ones (after checking that their layout is its own) and swaps the new
// program into the pinned links (link.Update), so forwarding never stops.
//
// The layout check compares, map by map, what the kernel reports (type,
// key and value size, max entries, flags) and a digest of the BTF of the
// key and value types (field names, offsets, sizes), which the first
// daemon stored in a small pinned map of its own (layoutMap). A difference
// is refused, naming the map and what differs: there is no migration.

// bpffsRoot is where bpffs is mounted, when it is not already.
const bpffsRoot = "/sys/fs/bpf"

// layoutMap is the pinned map of layout digests, keyed by map name.
const layoutMap = "sy_layout"

// linkPrefix names a pinned XDP link: linkPrefix + ifindex.
const linkPrefix = "xdp_link_"

// ErrLayout marks a pinned data path whose map layout is not this binary's.
var ErrLayout = errors.New("pinned data path has another map layout")

// ensureBPFFS mounts bpffs on /sys/fs/bpf when dir is under it and it is not
// mounted yet, and checks that dir is on a bpffs.
//
// A mount made here lives in this process's mount namespace: a daemon run
// by `ip netns exec` (which mounts a sysfs of its own on /sys) would get a
// bpffs that dies with it, and its pins with it. Such a daemon needs a
// pin_dir on a bpffs mounted outside /sys in the host's mount namespace
// (MountBPFFS; the lab does this).
func ensureBPFFS(dir string) error {
	if strings.HasPrefix(dir, bpffsRoot+"/") {
		if err := MountBPFFS(bpffsRoot); err != nil {
			return err
		}
	}
	// The nearest existing ancestor tells the file system dir will be on.
	p := dir
	for {
		var st unix.Statfs_t
		err := unix.Statfs(p, &st)
		if err == nil {
			if st.Type != unix.BPF_FS_MAGIC {
				return fmt.Errorf("pin directory %s: %s is not on a bpffs (mount -t bpf bpf DIR)", dir, p)
			}
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) || p == "/" {
			return fmt.Errorf("pin directory %s: %w", dir, err)
		}
		p = filepath.Dir(p)
	}
}

// MountBPFFS mounts a bpffs on dir (made if need be) unless one is there.
func MountBPFFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("mount bpffs on %s: %w", dir, err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs on %s: %w", dir, err)
	}
	return nil
}

// pinnable says whether a map of the spec is pinned: the program's maps,
// not the sections of its globals (.rodata holds load-time constants the
// new program brings; .bss holds sy_now, which the daemon rewrites from
// CLOCK_MONOTONIC, a clock that a restart does not reset).
func pinnable(name string) bool { return !strings.HasPrefix(name, ".") }

// LoadPinned is Load with the data path pinned in dir (a bpffs directory,
// mounted if need be). When dir already holds a data path, its maps are
// adopted after a layout check and adopted reports true; otherwise the new
// maps are pinned there. Attach then adopts or pins the links.
func LoadPinned(opts Options, dir string) (d *Datapath, adopted bool, err error) {
	opts.defaults()
	if err := ensureBPFFS(dir); err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("pin directory %s: %w", dir, err)
	}
	spec, err := loadSy()
	if err != nil {
		return nil, false, fmt.Errorf("load BPF spec: %w", err)
	}
	if err := sizeSpec(spec, opts); err != nil {
		return nil, false, err
	}
	repl, err := adoptMaps(spec, dir)
	defer func() {
		for _, m := range repl {
			m.Close()
		}
	}()
	if err != nil {
		return nil, false, err
	}
	d, err = load(spec, opts, &ebpf.CollectionOptions{MapReplacements: repl})
	if err != nil {
		return nil, false, err
	}
	d.pinDir = dir
	if len(repl) > 0 {
		return d, true, nil
	}
	if err := d.pinMaps(spec); err != nil {
		d.Close()
		return nil, false, err
	}
	return d, false, nil
}

// adoptMaps loads the maps pinned in dir, after checking each against spec.
// An empty directory gives no maps; a partial one is refused.
func adoptMaps(spec *ebpf.CollectionSpec, dir string) (map[string]*ebpf.Map, error) {
	lm, err := ebpf.LoadPinnedMap(filepath.Join(dir, layoutMap), nil)
	if errors.Is(err, fs.ErrNotExist) {
		// No layout map: a fresh directory, unless maps were left behind by
		// a daemon that died before it finished pinning.
		for name := range spec.Maps {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil && pinnable(name) {
				return nil, fmt.Errorf("%w: %s holds map %s but no layout record; remove it with `switchyard distributor --config FILE --unpin`", ErrLayout, dir, name)
			}
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pinned layout record in %s: %w", dir, err)
	}
	defer lm.Close()
	repl := map[string]*ebpf.Map{}
	fail := func(err error) (map[string]*ebpf.Map, error) {
		for _, m := range repl {
			m.Close()
		}
		return nil, err
	}
	for _, name := range sortedMapNames(spec) {
		ms := spec.Maps[name]
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if err != nil {
			return fail(fmt.Errorf("%w: map %s is missing from %s (%v): this binary has it, the running data path does not", ErrLayout, name, dir, err))
		}
		repl[name] = m
		if diff := mapDiff(ms, m); diff != "" {
			return fail(fmt.Errorf("%w: map %s in %s: %s; refusing to adopt it (start the binary that made it, or remove it with `switchyard distributor --config FILE --unpin`, which breaks established flows)", ErrLayout, name, dir, diff))
		}
		var got [32]byte
		if err := lm.Lookup(layoutKey(name), &got); err != nil {
			return fail(fmt.Errorf("%w: map %s in %s has no layout record: %v", ErrLayout, name, dir, err))
		}
		if want := layoutDigest(ms); got != want {
			return fail(fmt.Errorf("%w: map %s in %s: the BTF of its key or value differs (fields, offsets or sizes); refusing to adopt it (start the binary that made it, or remove it with `switchyard distributor --config FILE --unpin`, which breaks established flows)", ErrLayout, name, dir))
		}
	}
	return repl, nil
}

func sortedMapNames(spec *ebpf.CollectionSpec) []string {
	var names []string
	for name := range spec.Maps {
		if pinnable(name) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// mapDiff says how the kernel's map m differs from ms, or "".
func mapDiff(ms *ebpf.MapSpec, m *ebpf.Map) string {
	var d []string
	if m.Type() != ms.Type {
		d = append(d, fmt.Sprintf("type %v, this binary %v", m.Type(), ms.Type))
	}
	if m.KeySize() != ms.KeySize {
		d = append(d, fmt.Sprintf("key size %d, this binary %d", m.KeySize(), ms.KeySize))
	}
	if m.ValueSize() != ms.ValueSize {
		d = append(d, fmt.Sprintf("value size %d, this binary %d", m.ValueSize(), ms.ValueSize))
	}
	if m.MaxEntries() != ms.MaxEntries {
		d = append(d, fmt.Sprintf("max entries %d, this binary and config %d", m.MaxEntries(), ms.MaxEntries))
	}
	flags := m.Flags()
	if ms.Type == ebpf.DevMap || ms.Type == ebpf.DevMapHash {
		// The kernel marks device maps read-only for programs itself.
		flags &^= unix.BPF_F_RDONLY_PROG
	}
	if flags != ms.Flags {
		d = append(d, fmt.Sprintf("flags %#x, this binary %#x", flags, ms.Flags))
	}
	if len(d) == 0 {
		return ""
	}
	return "pinned " + strings.Join(d, "; ")
}

// layoutKey is a map name as the layout map's 16-byte key.
func layoutKey(name string) [16]byte {
	var k [16]byte
	copy(k[:], name)
	return k
}

// layoutDigest hashes the BTF layout of ms's key and value.
func layoutDigest(ms *ebpf.MapSpec) [32]byte {
	var b strings.Builder
	fmt.Fprintf(&b, "%v/%d/%d/%#x;", ms.Type, ms.KeySize, ms.ValueSize, ms.Flags)
	describeBTF(&b, ms.Key, 0)
	b.WriteString(";")
	describeBTF(&b, ms.Value, 0)
	return sha256.Sum256([]byte(b.String()))
}

// describeBTF writes the layout of t: names, sizes, offsets, recursively.
func describeBTF(b *strings.Builder, t btf.Type, depth int) {
	if t == nil || depth > 8 {
		b.WriteString("-")
		return
	}
	t = btf.UnderlyingType(t)
	switch t := t.(type) {
	case *btf.Struct:
		describeMembers(b, "struct", t.Size, t.Members, depth)
	case *btf.Union:
		describeMembers(b, "union", t.Size, t.Members, depth)
	case *btf.Array:
		fmt.Fprintf(b, "[%d]", t.Nelems)
		describeBTF(b, t.Type, depth+1)
	case *btf.Int:
		fmt.Fprintf(b, "int%d%v", t.Size, t.Encoding)
	case *btf.Enum:
		fmt.Fprintf(b, "enum%d", t.Size)
	case *btf.Pointer:
		b.WriteString("ptr")
	default:
		fmt.Fprintf(b, "%T", t)
	}
}

func describeMembers(b *strings.Builder, kind string, size uint32, ms []btf.Member, depth int) {
	b.WriteString(kind + strconv.Itoa(int(size)) + "{")
	for _, m := range ms {
		fmt.Fprintf(b, "%s@%d:%d=", m.Name, m.Offset, m.BitfieldSize)
		describeBTF(b, m.Type, depth+1)
		b.WriteString(",")
	}
	b.WriteString("}")
}

// pinMaps pins every map of a freshly loaded data path and records the
// layout, last: a directory with a layout record is complete.
func (d *Datapath) pinMaps(spec *ebpf.CollectionSpec) error {
	coll := d.objs.syMaps
	byName := map[string]*ebpf.Map{
		"flows": coll.Flows, "half_open": coll.HalfOpen, "second_keys": coll.SecondKeys, "masks": coll.Masks,
		"services": coll.Services, "vips": coll.Vips, "rings": coll.Rings, "tms": coll.Tms, "tm_by_mac": coll.TmByMac,
		"learn_srcs": coll.LearnSrcs, "ifaces": coll.Ifaces, "tx_ports": coll.TxPorts, "settings": coll.Settings,
		"counters": coll.Counters, "svc_stats": coll.SvcStats, "tm_stats": coll.TmStats, "sig_scratch": coll.SigScratch,
		"events": coll.Events, "policy_rr": coll.PolicyRr,
		"policy_active": coll.PolicyActive, "policy_weight": coll.PolicyWeight,
		"policy_qos": coll.PolicyQos, "policy_qos_rings": coll.PolicyQosRings,
	}
	names := sortedMapNames(spec)
	for _, name := range names {
		m, ok := byName[name]
		if !ok {
			return fmt.Errorf("pin map %s: the loader does not know it (add it to pinMaps)", name)
		}
		if err := m.Pin(filepath.Join(d.pinDir, name)); err != nil {
			return fmt.Errorf("pin map %s in %s: %w", name, d.pinDir, err)
		}
	}
	lm, err := ebpf.NewMap(&ebpf.MapSpec{Name: layoutMap, Type: ebpf.Hash, KeySize: 16, ValueSize: 32, MaxEntries: 256})
	if err != nil {
		return fmt.Errorf("create layout record: %w", err)
	}
	defer lm.Close()
	for _, name := range names {
		if err := lm.Put(layoutKey(name), layoutDigest(spec.Maps[name])); err != nil {
			return fmt.Errorf("write layout record of %s: %w", name, err)
		}
	}
	if err := lm.Pin(filepath.Join(d.pinDir, layoutMap)); err != nil {
		return fmt.Errorf("pin layout record in %s: %w", d.pinDir, err)
	}
	return nil
}

// adoptLink swaps the program into the link pinned for ifindex, if there is
// one on that interface still. ok false: none (or a stale one, removed).
func (d *Datapath) adoptLink(ifindex int) (bool, error) {
	path := filepath.Join(d.pinDir, linkPrefix+strconv.Itoa(ifindex))
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("load pinned XDP link %s: %w", path, err)
	}
	info, err := l.Info()
	if err != nil || info.XDP() == nil || int(info.XDP().Ifindex) != ifindex {
		// The interface went away (and maybe came back with another
		// index): the link forwards nothing; start afresh.
		l.Unpin()
		l.Close()
		return false, nil
	}
	if err := l.Update(d.objs.SwitchyardXdp); err != nil {
		l.Close()
		return false, fmt.Errorf("replace the program in pinned XDP link %s: %w", path, err)
	}
	d.links[ifindex] = l
	return true, nil
}

// pinLink pins a new link.
func (d *Datapath) pinLink(ifindex int, l link.Link) error {
	path := filepath.Join(d.pinDir, linkPrefix+strconv.Itoa(ifindex))
	if err := l.Pin(path); err != nil {
		return fmt.Errorf("pin XDP link of ifindex %d in %s: %w", ifindex, d.pinDir, err)
	}
	return nil
}

// Pinned is the pin directory, "" if the data path is not pinned.
func (d *Datapath) Pinned() string { return d.pinDir }

// Remove unpins everything and closes the data path: the program is
// detached from every interface and the maps are freed.
func (d *Datapath) Remove() error {
	var errs []error
	if d.pinDir != "" {
		errs = append(errs, RemovePinned(d.pinDir))
	}
	errs = append(errs, d.Close())
	return errors.Join(errs...)
}

// RemovePinned removes a pinned data path: unpinning its links detaches the
// program once no process holds them, unpinning its maps frees them. A
// directory that does not exist is not an error.
func RemovePinned(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove pinned data path %s: %w", dir, err)
	}
	return nil
}

// ConfigTables are the tables the daemon writes from its config, as a
// pinned data path holds them: what a restarted daemon starts its diff
// from, so that it rewrites only what changed and deletes what the config
// no longer has.
type ConfigTables struct {
	TMs       map[uint32]TM
	Services  map[ServiceKey]Service
	VIPs      map[VIPKey]uint32
	Senders   map[[6]uint8]uint32
	LearnSrcs map[VIPKey]uint32
}

// ReadConfigTables reads the daemon-written tables.
func (d *Datapath) ReadConfigTables() (ConfigTables, error) {
	t := ConfigTables{TMs: map[uint32]TM{}, Services: map[ServiceKey]Service{}, VIPs: map[VIPKey]uint32{},
		Senders: map[[6]uint8]uint32{}, LearnSrcs: map[VIPKey]uint32{}}
	var zero TM
	for i := range uint32(MaxTMs) {
		var e TM
		if err := d.maps().Tms.Lookup(i, &e); err != nil {
			return t, fmt.Errorf("read TM %d: %w", i, err)
		}
		if e != zero {
			t.TMs[i] = e
		}
	}
	var err error
	put := func(k ServiceKey, v Service) bool { t.Services[k] = v; return true }
	if e := walk(d.maps().Services, put); e != nil {
		err = errors.Join(err, fmt.Errorf("read services: %w", e))
	}
	if e := walk(d.maps().Vips, func(k VIPKey, v uint32) bool { t.VIPs[k] = v; return true }); e != nil {
		err = errors.Join(err, fmt.Errorf("read VIPs: %w", e))
	}
	if e := walk(d.maps().TmByMac, func(k MACKey, v uint32) bool { t.Senders[k.Mac] = v; return true }); e != nil {
		err = errors.Join(err, fmt.Errorf("read signal senders: %w", e))
	}
	if e := walk(d.maps().LearnSrcs, func(k VIPKey, v uint32) bool { t.LearnSrcs[k] = v; return true }); e != nil {
		err = errors.Join(err, fmt.Errorf("read learning sources: %w", e))
	}
	return t, err
}

// PruneLinks removes the pinned links of interfaces this data path was not
// attached to (an interface dropped from the config across a restart), so
// that the program leaves them.
func (d *Datapath) PruneLinks() error {
	if d.pinDir == "" {
		return nil
	}
	ents, err := os.ReadDir(d.pinDir)
	if err != nil {
		return fmt.Errorf("prune pinned XDP links in %s: %w", d.pinDir, err)
	}
	var errs []error
	for _, e := range ents {
		idx, ok := strings.CutPrefix(e.Name(), linkPrefix)
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(idx); err == nil {
			if _, mine := d.links[n]; mine {
				continue
			}
		}
		if err := os.Remove(filepath.Join(d.pinDir, e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("remove pinned XDP link %s: %w", e.Name(), err))
		}
	}
	return errors.Join(errs...)
}
