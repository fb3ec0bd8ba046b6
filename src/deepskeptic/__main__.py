from deepskeptic.cli import main

raise SystemExit(main())
