package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
)

// ImageSpec describes an image built offline from Debian packages: debootstrap makes a
// minimal root file system, and the engine imports it. No registry is needed.
type ImageSpec struct {
	Tag     string
	Suite   string   // Debian release, e.g. "bookworm"
	Mirror  string   // Debian mirror URL
	Include []string // packages added to the minimal base
	// Setup runs in the new root file system (chroot) after debootstrap, e.g. an apt-get
	// install of packages whose dependencies debootstrap cannot resolve.
	Setup []string
	// Changes are Dockerfile instructions applied on import (ENV, WORKDIR, CMD, ...).
	Changes []string
}

// DefaultMirror is Debian's redirecting mirror.
const DefaultMirror = "http://deb.debian.org/debian"

// DefaultImageSpecs are the images `enclave-mcp images build` makes: the default image with
// the code-interpreter stack (DataStackPackages), and the notebook image with the same stack
// and Jupyter.
func DefaultImageSpecs(mirror string) []ImageSpec {
	if mirror == "" {
		mirror = DefaultMirror
	}
	// debootstrap alone cannot install these (it does not resolve virtual packages), so apt
	// does, in the chroot, from the mirror debootstrap wrote into sources.list.
	aptInstall := func(packages string) []string {
		return []string{"export DEBIAN_FRONTEND=noninteractive && apt-get update -qq && " +
			"apt-get install -y -qq --no-install-recommends " + packages}
	}
	return []ImageSpec{{
		Tag:     DefaultImage,
		Suite:   "bookworm",
		Mirror:  mirror,
		Include: []string{"python3"},
		Setup:   aptInstall(DataStackPackages),
		Changes: imageChanges,
	}, {
		Tag:     DefaultNotebookImage,
		Suite:   "bookworm",
		Mirror:  mirror,
		Include: []string{"python3"},
		Setup:   aptInstall(DataStackPackages + " " + notebookPackages),
		Changes: imageChanges,
	}}
}

// imageChanges are every image's Dockerfile instructions.
var imageChanges = []string{
	"ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"ENV LANG=C.UTF-8",
	"WORKDIR /sandbox",
	`CMD ["/bin/sh"]`,
}

// DataStackPackages are the Debian packages of the code-interpreter stack both default images
// carry: what data-analysis code imports first (numpy, pandas, scipy, matplotlib, seaborn,
// scikit-learn, sympy, statsmodels), the readers and writers of the files users bring
// (openpyxl and xlrd for Excel, lxml and bs4 for HTML and XML, PyYAML, Pillow), requests,
// and python3-munkres, matplotlib's optional dependency that would otherwise pull in a
// compiler.
const DataStackPackages = "python3-numpy python3-pandas python3-scipy python3-matplotlib python3-munkres " +
	"python3-seaborn python3-sklearn python3-sympy python3-statsmodels python3-openpyxl python3-xlrd " +
	"python3-lxml python3-bs4 python3-yaml python3-pil python3-requests python3-tabulate python3-tqdm " +
	"python3-networkx python3-dateutil python3-tz"

// PolyglotImage carries the toolchains multi_code_executor runs. It is large (several GB)
// and slow to build, so `enclave-mcp images build` makes it only when asked (--image or
// --all); see OptionalImageSpecs.
const PolyglotImage = "enclave/polyglot:bookworm"

// OptionalImageSpecs are the images `enclave-mcp images build` makes only when named with
// --image, or with --all.
func OptionalImageSpecs(mirror string) []ImageSpec {
	if mirror == "" {
		mirror = DefaultMirror
	}
	return []ImageSpec{{
		Tag:     PolyglotImage,
		Suite:   "bookworm",
		Mirror:  mirror,
		Include: []string{"python3"},
		Setup: []string{
			// Java's and ca-certificates-java's maintainer scripts run the JVM, which
			// wants /proc; it is unmounted whatever apt does.
			"mount -t proc proc /proc && trap 'umount /proc' EXIT && " +
				"export DEBIAN_FRONTEND=noninteractive && apt-get update -qq && " +
				"apt-get install -y -qq --no-install-recommends " + polyglotPackages,
		},
		Changes: imageChanges,
	}}
}

// polyglotPackages are the toolchains Debian bookworm packages for the languages of
// ms-enclave's multi_code_executor (and SandboxFusion's): julia, swift and lean are not
// packaged, and CUDA needs a GPU.
const polyglotPackages = "python3-pytest bash g++ golang-go openjdk-17-jdk-headless junit4 " +
	"nodejs node-typescript jest ts-jest rustc php-cli ruby perl lua5.4 r-base-core " +
	"mono-mcs mono-runtime ldc scala kotlin racket iverilog sqlite3"

// notebookPackages make the notebook image, beside DataStackPackages: Debian's jupyter_server
// serves the same kernel API as a kernel gateway (none is packaged).
const notebookPackages = "python3-jupyter-server python3-ipykernel"

// specLabel carries the digest of the ImageSpec an image was built from, so that a build of
// missing images also rebuilds the ones whose spec has changed since.
const specLabel = "org.enclave-mcp.image-spec"

// Digest identifies what the spec builds. The mirror is left out: any mirror serves the same
// packages.
func (s ImageSpec) Digest() string {
	b, _ := json.Marshal([]any{s.Suite, s.Include, s.Setup, s.Changes})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// ImageState says whether the engine has an image built from a spec.
type ImageState string

const (
	ImageMissing  ImageState = "missing"
	ImageOutdated ImageState = "outdated" // built from another spec (an older release's)
	ImageCurrent  ImageState = "current"
)

// ImagePresent reports whether the engine has tag.
func (e *Docker) ImagePresent(ctx context.Context, tag string) (bool, error) {
	_, found, err := e.imageLabels(ctx, tag)
	return found, err
}

// ImageState reports whether the engine has spec's image, built from this spec.
func (e *Docker) ImageState(ctx context.Context, spec ImageSpec) (ImageState, error) {
	labels, found, err := e.imageLabels(ctx, spec.Tag)
	switch {
	case err != nil:
		return "", err
	case !found:
		return ImageMissing, nil
	case labels[specLabel] != spec.Digest():
		return ImageOutdated, nil
	}
	return ImageCurrent, nil
}

func (e *Docker) imageLabels(ctx context.Context, tag string) (labels map[string]string, found bool, err error) {
	info, err := e.cli.ImageInspect(ctx, tag)
	if errdefs.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("%w: inspecting image %s: %w", ErrEngine, tag, err)
	}
	if info.Config != nil {
		labels = info.Config.Labels
	}
	return labels, true, nil
}

// BuildImage builds spec and tags it, writing progress to out. It needs root (debootstrap
// does) and the debootstrap command.
func (e *Docker) BuildImage(ctx context.Context, spec ImageSpec, out io.Writer) error {
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return errors.New("building images needs debootstrap: apt-get install debootstrap")
	}
	root, err := os.MkdirTemp("", "enclave-rootfs-")
	if err != nil {
		return fmt.Errorf("creating build directory: %w", err)
	}
	defer os.RemoveAll(root)

	start := time.Now()
	fmt.Fprintf(out, "==> %s: debootstrap %s (%s) with %s\n", spec.Tag, spec.Suite, spec.Mirror, strings.Join(spec.Include, " "))
	args := []string{"--variant=minbase"}
	if len(spec.Include) > 0 {
		args = append(args, "--include="+strings.Join(spec.Include, ","))
	}
	args = append(args, spec.Suite, root, spec.Mirror)
	if err := runStep(ctx, out, "debootstrap", args...); err != nil {
		return fmt.Errorf("building %s: debootstrap: %w", spec.Tag, err)
	}
	for _, step := range spec.Setup {
		fmt.Fprintf(out, "==> %s: %s\n", spec.Tag, step)
		if err := runStep(ctx, out, "chroot", root, "/bin/sh", "-c", step); err != nil {
			return fmt.Errorf("building %s: %s: %w", spec.Tag, step, err)
		}
	}
	// Leave no package cache or lists in the image.
	for _, dir := range []string{"var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"} {
		_ = cleanDir(root + "/" + dir)
	}

	fmt.Fprintf(out, "==> %s: importing into the engine\n", spec.Tag)
	tarCmd := exec.CommandContext(ctx, "tar", "--numeric-owner", "-C", root, "-c", ".")
	tarOut, err := tarCmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("building %s: %w", spec.Tag, err)
	}
	tarCmd.Stderr = out
	if err := tarCmd.Start(); err != nil {
		return fmt.Errorf("building %s: starting tar: %w", spec.Tag, err)
	}
	changes := slices.Concat(spec.Changes, []string{"LABEL " + specLabel + "=" + spec.Digest()})
	resp, err := e.cli.ImageImport(ctx, image.ImportSource{Source: tarOut, SourceName: "-"}, spec.Tag, image.ImportOptions{Changes: changes})
	if err != nil {
		_ = tarCmd.Process.Kill()
		_ = tarCmd.Wait()
		return fmt.Errorf("%w: importing %s: %w", ErrEngine, spec.Tag, err)
	}
	importErr := readImportStream(resp)
	if err := tarCmd.Wait(); err != nil {
		return fmt.Errorf("building %s: tar: %w", spec.Tag, err)
	}
	if importErr != nil {
		return fmt.Errorf("%w: importing %s: %w", ErrEngine, spec.Tag, importErr)
	}
	fmt.Fprintf(out, "==> %s: built in %s\n", spec.Tag, time.Since(start).Round(time.Second))
	return nil
}

func runStep(ctx context.Context, out io.Writer, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = out, out
	return cmd.Run()
}

func cleanDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(dir + "/" + e.Name()); err != nil {
			return err
		}
	}
	return nil
}

// readImportStream drains the engine's JSON progress stream and returns the error it reports.
func readImportStream(r io.ReadCloser) error {
	defer r.Close()
	dec := json.NewDecoder(r)
	for {
		var msg struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&msg); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if msg.Error != "" {
			return errors.New(msg.Error)
		}
	}
}
