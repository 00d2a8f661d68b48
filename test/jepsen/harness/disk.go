package harness

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Disk is a small ext4 filesystem in a sparse file, loop-mounted as one
// node's data directory, so that the disk-full fault can fill it without
// touching the machine's own disk.
type Disk struct {
	Image, Mount string
	ballast      []string
}

// diskSize is each node's filesystem: small, yet far more than a run
// writes (a few MiB per minute). Badger's memtables and value logs are
// sparse files that may look larger than the filesystem; only the blocks
// written take space, here and in the image on the machine's disk.
const diskSize = 1 << 30

// imagePrefix names every image file, so the sweep can find stale ones.
var imagePrefix = filepath.Join(os.TempDir(), nsPrefix+"disk-")

// NewDisk makes and mounts a filesystem for node at mount.
func NewDisk(node, mount string) (*Disk, error) {
	d := &Disk{Image: imagePrefix + node + ".img", Mount: mount}
	os.Remove(d.Image)
	f, err := os.Create(d.Image)
	if err != nil {
		return nil, err
	}
	err = f.Truncate(diskSize)
	f.Close()
	if err != nil {
		return nil, err
	}
	// -m 0: no blocks reserved for root (the node runs as root and would
	// otherwise write into them when the disk is "full").
	if err := run("mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1", d.Image); err != nil {
		os.Remove(d.Image)
		return nil, err
	}
	if err := os.MkdirAll(mount, 0o755); err != nil {
		return nil, err
	}
	if err := run("mount", "-o", "loop", d.Image, mount); err != nil {
		os.Remove(d.Image)
		return nil, err
	}
	return d, nil
}

// Fill allocates every free block of the filesystem and reports how many
// bytes are left (0 when the fill took).
func (d *Disk) Fill() (int64, error) {
	for i := 0; i < 4; i++ {
		var st syscall.Statfs_t
		if err := syscall.Statfs(d.Mount, &st); err != nil {
			return 0, err
		}
		free := int64(st.Bavail) * int64(st.Bsize)
		if free <= 0 {
			return 0, nil
		}
		p := filepath.Join(d.Mount, fmt.Sprintf("ballast-%d", len(d.ballast)))
		f, err := os.Create(p)
		if err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return 0, nil
			}
			return free, err
		}
		d.ballast = append(d.ballast, p)
		err = syscall.Fallocate(int(f.Fd()), 0, 0, free)
		if err != nil && !errors.Is(err, syscall.ENOSPC) {
			f.Close()
			return free, err
		}
		if err != nil {
			// Take what is left in smaller pieces.
			for sz := free / 2; sz >= 4096; sz /= 2 {
				var off int64
				if fi, e := f.Stat(); e == nil {
					off = fi.Size()
				}
				_ = syscall.Fallocate(int(f.Fd()), 0, off, sz)
			}
		}
		f.Close()
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.Mount, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// Free reports the bytes available.
func (d *Disk) Free() int64 {
	var st syscall.Statfs_t
	if syscall.Statfs(d.Mount, &st) != nil {
		return -1
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// Drain removes the ballast.
func (d *Disk) Drain() error {
	var errs []error
	for _, p := range d.ballast {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	d.ballast = nil
	return errors.Join(errs...)
}

// Close unmounts the filesystem and deletes its image.
func (d *Disk) Close() error {
	err := run("umount", d.Mount)
	if err != nil {
		err = run("umount", "-l", d.Mount)
	}
	os.Remove(d.Image)
	return err
}

// sweepMounts unmounts filesystems a crashed run left mounted from our
// images and deletes the images.
func sweepMounts(logf func(string, ...any)) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 5 || !strings.Contains(f[4], "/"+nsPrefix+"run") {
				continue
			}
			logf("sweep: unmounting stale %s", f[4])
			if err := run("umount", "-l", f[4]); err != nil {
				logf("sweep: %v", err)
			}
		}
	}
	imgs, _ := filepath.Glob(imagePrefix + "*.img")
	for _, img := range imgs {
		if out, err := output("losetup", "-j", img); err == nil {
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				if dev, _, ok := strings.Cut(line, ":"); ok && strings.HasPrefix(dev, "/dev/loop") {
					_ = run("losetup", "-d", dev)
				}
			}
		}
		logf("sweep: deleting stale image %s", img)
		os.Remove(img)
	}
}
