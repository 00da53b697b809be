package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// The River peer's server: a private PostgreSQL cluster in a temporary
// directory, started by `bench serve --peer river` and stopped with it.

const peerRiver = "river"

// pgBinDir returns the directory of the newest installed PostgreSQL's
// server binaries (Debian: /usr/lib/postgresql/<major>/bin).
func pgBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("PostgreSQL server binaries not found (apt package postgresql)")
}

// ensurePostgres makes sure PostgreSQL's server binaries are installed:
// when they are not and this process runs as root with apt-get, it
// installs the postgresql package (progress to log). The error says why
// the River peer cannot run.
func ensurePostgres(log io.Writer) error {
	if _, err := pgBinDir(); err == nil {
		return nil
	}
	if os.Geteuid() != 0 {
		return errors.New("PostgreSQL is not installed and this is not root: install the apt package postgresql")
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return errors.New("PostgreSQL is not installed and apt-get is not available")
	}
	fmt.Fprintln(log, "bench: river: installing PostgreSQL (apt-get install postgresql)")
	install := func() error {
		cmd := exec.Command("apt-get", "install", "-y", "-q", "postgresql")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = log, log
		return cmd.Run()
	}
	if err := install(); err != nil {
		upd := exec.Command("apt-get", "update", "-q")
		upd.Stdout, upd.Stderr = log, log
		if uerr := upd.Run(); uerr != nil {
			return fmt.Errorf("apt-get update: %w", uerr)
		}
		if err := install(); err != nil {
			return fmt.Errorf("apt-get install postgresql: %w", err)
		}
	}
	_, err := pgBinDir()
	return err
}

// startPostgres initialises a cluster in a new temporary directory (owned
// by the postgres user when this runs as root: PostgreSQL refuses to run
// as root), starts it on 127.0.0.1 at a free port, and returns its URL and
// how to stop it (fast shutdown, then the directory is removed). async
// sets synchronous_commit off: a commit returns before its WAL is flushed,
// like mqnode's async durability; otherwise every commit waits for its WAL
// fsync (with PostgreSQL's group commit).
func startPostgres(ctx context.Context, async bool, stderr io.Writer) (string, func() error, error) {
	bin, err := pgBinDir()
	if err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp("", "mqmesh-bench-pg-")
	if err != nil {
		return "", nil, err
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return "", nil, fmt.Errorf("running as root needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return "", nil, err
		}
	}
	command := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGINT}
		cmd.Stderr = stderr
		return cmd
	}
	data := filepath.Join(dir, "data")
	initdb := command("initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
	initdb.Stdout = io.Discard
	if err := initdb.Run(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("initdb: %w", err)
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	sync := "on"
	if async {
		sync = "off"
	}
	logPath := filepath.Join(dir, "postgres.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	defer logFile.Close()
	pg := command("postgres", "-D", data, "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "synchronous_commit="+sync,
		"-c", "max_connections=200", "-c", "shared_buffers=128MB", "-c", "logging_collector=off")
	pg.Stderr = logFile // its log; quoted when it fails to start
	if err := pg.Start(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- pg.Wait() }()
	stop := func() error {
		_ = pg.Process.Signal(syscall.SIGINT) // fast shutdown
		var err error
		select {
		case err = <-exited:
		case <-time.After(30 * time.Second):
			_ = pg.Process.Kill()
			err = errors.Join(errors.New("postgres: no fast shutdown within 30s"), <-exited)
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = nil // the signal's exit
		}
		return errors.Join(err, os.RemoveAll(dir))
	}
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(cctx, url)
		cancel()
		if err == nil {
			conn.Close(ctx)
			return url, stop, nil
		}
		select {
		case werr := <-exited:
			exited <- werr
			log, _ := os.ReadFile(logPath)
			return "", nil, errors.Join(fmt.Errorf("postgres exited: %v; its log:\n%s", werr, log), stop())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", nil, errors.Join(fmt.Errorf("postgres not ready within 60s: %w", err), stop())
		}
	}
}

// freePort returns a TCP port free on 127.0.0.1 a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
