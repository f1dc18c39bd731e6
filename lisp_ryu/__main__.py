from lisp_ryu.cli import main

raise SystemExit(main())
