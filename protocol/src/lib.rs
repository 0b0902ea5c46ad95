//! Wire types shared by the hsm coordinator and agent.
