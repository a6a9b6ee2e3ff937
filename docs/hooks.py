"""mkdocs hook: the docs link to repository files outside docs/ (figures, results, examples) by relative paths
such as ``../results/demo/figure1.png``, which resolve when the Markdown is read in the repository. For the site,
every such target that exists is added as a file under ``repo/`` so that the links resolve (and are checked:
a link to a missing file still fails ``mkdocs build --strict``)."""

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, InclusionLevel

LINK = re.compile(r"\]\(([^)#\s]+)")


def on_files(files, config):
    docs = Path(config["docs_dir"]).resolve()
    root = docs.parent
    for page in list(files.documentation_pages()):
        text = Path(page.abs_src_path).read_text(encoding="utf-8")
        for target in LINK.findall(text):
            if "://" in target:
                continue
            uri = posixpath.normpath(posixpath.join(posixpath.dirname(page.src_uri), target))
            if not uri.startswith("../") or files.get_file_from_path(uri) is not None:
                continue
            path = (docs / uri).resolve()
            if path.is_file() and root in path.parents:
                rel = path.relative_to(root).as_posix()
                file = File(uri, str(docs), config["site_dir"], config["use_directory_urls"], dest_uri=f"repo/{rel}")
                file.inclusion = InclusionLevel.NOT_IN_NAV if file.is_documentation_page() else InclusionLevel.INCLUDED
                files.append(file)
    return files
