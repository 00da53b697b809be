package mesh

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/mqmesh/mqmesh/internal/subject"
)

// Profile selects memberlist timings, as memberlist's own
// DefaultLANConfig / DefaultWANConfig / DefaultLocalConfig.
type Profile string

const (
	// ProfileLAN suits members inside one IDC: failure detected in about
	// 5 s (probe 1 s, suspicion 4 × log10(n) probes).
	ProfileLAN Profile = "lan"
	// ProfileWAN suits a mesh spanning IDCs over slower links: probe 5 s,
	// suspicion 6 × log10(n) probes; failure detected in tens of seconds.
	ProfileWAN Profile = "wan"
	// ProfileLocal suits one machine (tests, the simulator): probe 1 s with
	// a 200 ms timeout, suspicion 3 × log10(n) probes; failure in ~2–4 s.
	ProfileLocal Profile = "local"
)

// GossipKeyEnv names the environment variable that may hold the gossip
// encryption key (base64 of 16, 24 or 32 bytes) when Config.SecretKey is
// empty.
const GossipKeyEnv = "MQMESH_GOSSIP_KEY"

// Defaults of Config and NodeAgentConfig: WithDefaults applies them, and
// the CLI's flags and config files read them from here.
const (
	DefaultBindAddr = "127.0.0.1"
	DefaultBindPort = 7946
	// DefaultClusterPort and DefaultGatewayPort are the ports of a node
	// agent's NATS routes (inside an IDC) and gateways (between IDCs), on
	// the host of the node's client listener.
	DefaultClusterPort = 6222
	DefaultGatewayPort = 7222
	DefaultProfile     = ProfileLAN
	DefaultJoinWait    = 10 * time.Second
	// DefaultRetain is how long failed and left members stay listed.
	DefaultRetain = time.Hour
	// DefaultRejoinInterval and DefaultRejoinMax bound the backoff of the
	// background join attempts to remembered and failed members.
	DefaultRejoinInterval = time.Second
	DefaultRejoinMax      = 10 * time.Second
	// DefaultLeaveTimeout bounds a graceful leave (Stop): how long the
	// leave may take to spread before gossip stops. Stop's ctx may shorten
	// it.
	DefaultLeaveTimeout = 2 * time.Second
)

// RandomPort as Config.BindPort picks a free port (tests, the simulator,
// several members on one host; worker pools by default). The zero port is
// DefaultBindPort, as every zero field is its default; in a listen address
// (host:port) port 0 picks a free one.
const RandomPort = -1

// Config configures a mesh member.
type Config struct {
	// Meta describes this member (role, IDC, host, name, addresses). Role,
	// IDC and Name are required; Name and IDC are subject tokens.
	Meta Meta `yaml:"-"`
	// BindAddr and BindPort are the gossip (UDP+TCP) address. Defaults
	// 127.0.0.1 and 7946 (DefaultBindPort); RandomPort (-1) picks a free
	// port.
	BindAddr string `yaml:"bind"`
	BindPort int    `yaml:"port"`
	// AdvertiseAddr is the address others reach this member at, when it
	// differs from BindAddr (e.g. binding 0.0.0.0). Default: BindAddr.
	AdvertiseAddr string `yaml:"advertise"`
	// Seeds are gossip addresses (host:port) of any existing members; one
	// reachable seed is enough. Empty: start a new mesh.
	Seeds []string `yaml:"seeds"`
	// Profile selects failure-detection timings: lan (default), wan, local.
	Profile Profile `yaml:"profile"`
	// SecretKey encrypts gossip: base64 of a 16, 24 or 32 byte key. Empty:
	// taken from $MQMESH_GOSSIP_KEY; empty there too: no encryption.
	SecretKey string `yaml:"secret_key"`
	// Keyring, when set, encrypts and authenticates gossip with these keys
	// (the first is the primary, used to send; any decrypts), and every
	// packet in and out must be encrypted: a member without a key is not
	// heard. It takes precedence over SecretKey. Set from the secrets
	// directory's gossip.key.
	Keyring [][]byte `yaml:"-"`
	// KeyringFile, with Keyring, is the file the keyring came from
	// (gossip.key): the member applies its changes while it runs, so keys
	// rotate without a restart (see SetKeyring).
	KeyringFile string `yaml:"-"`
	// JoinWait bounds the initial join. Default 10s.
	JoinWait time.Duration `yaml:"join_wait"`
	// Retain is how long failed and left members stay in Members(). 1h.
	Retain time.Duration `yaml:"retain"`
	// MembersFile, when set, is where the member remembers the other
	// members it knew (JSON, rewritten as membership changes), so that a
	// restart without a seed rejoins through them, and a member that was in
	// a mesh never silently starts a new one. NodeAgent sets it to
	// MembersFileName in the node's data dir. Empty: nothing remembered.
	MembersFile string `yaml:"-"`
	// RejoinInterval is the first delay between background join attempts
	// to remembered members not met again and to failed members (doubling
	// up to RejoinMax while they stay unreachable). Defaults 1s and 10s.
	RejoinInterval time.Duration `yaml:"-"`
	RejoinMax      time.Duration `yaml:"-"`
	// Logger receives the member's logs. Default slog.Default().
	Logger *slog.Logger `yaml:"-"`

	// tune, in tests, adjusts the memberlist config last (a transport that
	// can cut links, shorter timings).
	tune func(*memberlist.Config) error
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.BindAddr == "" {
		c.BindAddr = DefaultBindAddr
	}
	if c.BindPort == 0 {
		c.BindPort = DefaultBindPort
	}
	if c.Profile == "" {
		c.Profile = DefaultProfile
	}
	if c.JoinWait == 0 {
		c.JoinWait = DefaultJoinWait
	}
	if c.Retain == 0 {
		c.Retain = DefaultRetain
	}
	if c.RejoinInterval == 0 {
		c.RejoinInterval = DefaultRejoinInterval
	}
	if c.RejoinMax == 0 {
		c.RejoinMax = max(DefaultRejoinMax, c.RejoinInterval)
	}
	if c.SecretKey == "" {
		c.SecretKey = os.Getenv(GossipKeyEnv)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate checks a defaulted config and names the bad field.
func (c Config) Validate() error {
	var errs []error
	if c.Meta.Role != RoleNode && c.Meta.Role != RoleWorker {
		errs = append(errs, fmt.Errorf("meta.role %q: want node or worker", c.Meta.Role))
	}
	if err := subject.Validate("idc", c.Meta.IDC); err != nil {
		errs = append(errs, err)
	}
	if err := subject.Validate("name", c.Meta.Name); err != nil {
		errs = append(errs, err)
	}
	if c.Meta.Node != "" {
		if err := subject.Validate("node", c.Meta.Node); err != nil {
			errs = append(errs, err)
		}
	}
	if net.ParseIP(c.BindAddr) == nil {
		errs = append(errs, fmt.Errorf("bind %q: not an IP address", c.BindAddr))
	}
	if c.BindPort < RandomPort || c.BindPort > 65535 {
		errs = append(errs, fmt.Errorf("port %d: out of range (%d picks a free port)", c.BindPort, RandomPort))
	}
	if c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil {
		errs = append(errs, fmt.Errorf("advertise %q: not an IP address", c.AdvertiseAddr))
	}
	for _, s := range c.Seeds {
		if _, p, err := net.SplitHostPort(s); err != nil {
			errs = append(errs, fmt.Errorf("seed %q: want host:port: %w", s, err))
		} else if _, err := strconv.Atoi(p); err != nil {
			errs = append(errs, fmt.Errorf("seed %q: bad port", s))
		}
	}
	switch c.Profile {
	case ProfileLAN, ProfileWAN, ProfileLocal:
	default:
		errs = append(errs, fmt.Errorf("profile %q: want lan, wan or local", c.Profile))
	}
	if _, err := c.secretKey(); err != nil {
		errs = append(errs, err)
	}
	for i, k := range c.Keyring {
		if n := len(k); n != 16 && n != 24 && n != 32 {
			errs = append(errs, fmt.Errorf("keyring[%d]: %d bytes, want 16, 24 or 32", i, n))
		}
	}
	if c.JoinWait < 0 || c.Retain < 0 {
		errs = append(errs, errors.New("join_wait, retain: must not be negative"))
	}
	if c.RejoinInterval < 0 || c.RejoinMax < c.RejoinInterval {
		errs = append(errs, fmt.Errorf("rejoin_interval %s, rejoin_max %s: want 0 < rejoin_interval <= rejoin_max", c.RejoinInterval, c.RejoinMax))
	}
	return errors.Join(errs...)
}

func (c Config) secretKey() ([]byte, error) {
	if c.SecretKey == "" {
		return nil, nil
	}
	k, err := base64.StdEncoding.DecodeString(c.SecretKey)
	if err != nil {
		return nil, fmt.Errorf("secret_key: not base64: %w", err)
	}
	switch len(k) {
	case 16, 24, 32:
		return k, nil
	}
	return nil, fmt.Errorf("secret_key: %d bytes, want 16, 24 or 32", len(k))
}

// memberlistConfig builds the memberlist configuration of a profile.
func (c Config) memberlistConfig() (*memberlist.Config, error) {
	var mc *memberlist.Config
	switch c.Profile {
	case ProfileWAN:
		mc = memberlist.DefaultWANConfig()
	case ProfileLocal:
		mc = memberlist.DefaultLocalConfig()
	default:
		mc = memberlist.DefaultLANConfig()
	}
	// A member that comes back at a new address (a restarted host with a
	// new port) is accepted once it has been dead this long.
	switch c.Profile {
	case ProfileLocal:
		mc.DeadNodeReclaimTime = time.Second
	case ProfileWAN:
		mc.DeadNodeReclaimTime = 30 * time.Second
	default:
		mc.DeadNodeReclaimTime = 10 * time.Second
	}
	port := c.BindPort
	if port == RandomPort {
		port = 0 // memberlist picks a free one
	}
	mc.BindAddr = c.BindAddr
	mc.BindPort = port
	mc.AdvertiseAddr = c.AdvertiseAddr
	if c.AdvertiseAddr == "" {
		mc.AdvertiseAddr = c.BindAddr
	}
	mc.AdvertisePort = port
	key, err := c.secretKey()
	if err != nil {
		return nil, err
	}
	mc.SecretKey = key
	if len(c.Keyring) > 0 {
		kr, err := memberlist.NewKeyring(c.Keyring, c.Keyring[0])
		if err != nil {
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
		mc.SecretKey, mc.Keyring = nil, kr
	}
	if mc.SecretKey != nil || mc.Keyring != nil {
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	mc.LogOutput = slogWriter{c.Logger.With("component", "memberlist")}
	if c.tune != nil {
		if err := c.tune(mc); err != nil {
			return nil, err
		}
	}
	return mc, nil
}

// slogWriter turns memberlist's log lines into slog records.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	msg := string(p)
	switch {
	case strings.Contains(msg, "[ERR]"):
		w.l.Error(trimLog(msg))
	case strings.Contains(msg, "[WARN]"):
		w.l.Warn(trimLog(msg))
	default:
		w.l.Debug(trimLog(msg))
	}
	return len(p), nil
}
